"""--resume with a server optimizer: the checkpoint carries its encrypted state, the run goes on."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.build import he_config
from pipelines.spec import load_pipeline
from privacy.keyfile import read_key_file
from privacy.schemes import keys_from_secret
from tests.conftest import example_pipeline_text

pytestmark = pytest.mark.slow


def _fedsilo(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _state(folder: Path, run_id: str):
    return pickle.loads((folder / "checkpoints" / run_id / "state.pkl").read_bytes()).orchestrator


def test_fedadam_resumes_with_its_encrypted_optimizer_state(tmp_path: Path) -> None:
    # Prepare: two rounds of FedAdam under the packed codec
    text = example_pipeline_text(strategy='"fedadam"', rounds="2").replace(
        "[tracking]", f'[tracking]\ncheckpoints = "{tmp_path / "checkpoints"}"'
    )
    pipeline = tmp_path / "pipeline.toml"
    pipeline.write_text(text)
    first = _fedsilo(tmp_path, "run", str(pipeline), "--summary-json", "first.json")
    assert first.returncode == 0, first.stderr[-3000:]
    run_id = json.loads((tmp_path / "first.json").read_text())["run_id"]
    before = _state(tmp_path, run_id)
    # Execute: one more round from the checkpoint
    resumed = _fedsilo(
        tmp_path, "run", str(pipeline), "--resume", run_id, "--rounds", "3", "--summary-json", "s.json"
    )
    # Assert: the state was checkpointed encrypted, and the resumed round carried it on
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [p.terms for p in before.server_state] == [("round-2/server/m",), ("round-2/server/v",)]
    assert before.server_state[0].codec == "packed" and before.server_state[0].key_id == before.key_id
    after = _state(tmp_path, run_id)
    assert after.round == 3 and [p.terms for p in after.server_state] == [
        ("round-3/server/m",),
        ("round-3/server/v",),
    ]
    # v after round 3 grew from the checkpointed v (Adam: v3 = b2 v2 + (1 - b2) d^2 >= b2 v2), which a
    # reset state (v3 = (1 - b2) d^2) would not: decrypted with a silo's copy of the run's key
    he = he_config(load_pipeline(pipeline))
    secret = read_key_file(str(tmp_path / "checkpoints" / run_id / "keys" / "cleveland.key"), he, secret=True)
    codec = keys_from_secret(he, secret).codec()
    v2, v3 = codec.decode(before.server_state[1]), codec.decode(after.server_state[1])
    assert v2.max() > 0 and (v3 >= 0.99 * v2 - 1e-9).all()
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["rounds_completed"] == 3 and summary["final"]["global_val_accuracy"] > 0.7

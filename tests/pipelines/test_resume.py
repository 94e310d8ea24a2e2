"""Checkpoints and --resume: a driver or orchestrator that dies costs no rounds, no duplicates."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipelines.build import he_config
from pipelines.spec import load_pipeline
from privacy.keyfile import read_key_file
from privacy.schemes import keys_from_secret
from tests.conftest import example_pipeline_text

pytestmark = pytest.mark.slow
ROUNDS = 6


def _pipeline(folder: Path, **replace: str) -> Path:
    text = example_pipeline_text(rounds=str(ROUNDS), **replace).replace(
        "[tracking]", f'[tracking]\ncheckpoints = "{folder / "checkpoints"}"'
    )
    path = folder / "pipeline.toml"
    path.write_text(text)
    return path


def _checkpointed_round(folder: Path) -> tuple[str, int] | None:
    for state in (folder / "checkpoints").glob("*/state.pkl"):
        try:
            return state.parent.name, pickle.loads(state.read_bytes()).orchestrator.round
        except (EOFError, pickle.UnpicklingError):
            return None
    return None


def _state(folder: Path, run_id: str):
    return pickle.loads((folder / "checkpoints" / run_id / "state.pkl").read_bytes()).orchestrator


def _fedsilo(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _metric_history(folder: Path, run_id: str, name: str) -> list:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{folder / 'mlruns.db'}")
    return sorted(client.get_metric_history(run_id, name), key=lambda m: m.step)


def _metric_steps(folder: Path, run_id: str, name: str) -> list[int]:
    return [m.step for m in _metric_history(folder, run_id, name)]


def test_a_killed_driver_resumes_into_the_same_run(tmp_path: Path) -> None:
    # Prepare: a FedAdam run with record-level DP killed (driver, its local Ray, every actor)
    # once a round is checkpointed (the driver polls every 20 ms; a DP-SGD round takes longer)
    dp = '"packed"\ndp = "record"\nnoise_multiplier = 1.0\ndelta = 1e-3'
    pipeline = _pipeline(tmp_path, local_epochs="2", strategy='"fedadam"', he=dp)
    driver = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "run", str(pipeline)], cwd=tmp_path, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    seen = None
    while time.monotonic() < deadline and driver.poll() is None:
        seen = _checkpointed_round(tmp_path)
        if seen and seen[1] >= 1:
            os.killpg(driver.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    driver.wait(timeout=30)
    assert seen is not None and seen[1] < ROUNDS, "the run ended before it could be killed"
    run_id = seen[0]
    before = _state(tmp_path, run_id)
    # Execute
    resumed = _fedsilo(tmp_path, "run", str(pipeline), "--resume", run_id, "--summary-json", "s.json")
    # Assert: every round once, the same MLflow run, finished, model registered
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming after round" in resumed.stdout
    assert _metric_steps(tmp_path, run_id, "round/participants") == list(range(1, ROUNDS + 1))
    assert _metric_steps(tmp_path, run_id, "global/val_accuracy") == list(range(0, ROUNDS + 1))
    import json

    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["run_id"] == run_id and summary["rounds_completed"] == ROUNDS
    assert [r["round"] for r in summary["per_round"]] == list(range(1, ROUNDS + 1))
    assert summary["registered_model"]["version"] == "1"
    assert summary["final"]["global_val_accuracy"] > 0.7
    # FedAdam's state was checkpointed encrypted and carried on: v after the last round grew from
    # the checkpointed v (v_t = b2 v_(t-1) + (1 - b2) d^2 >= b2 v_(t-1)), which a reset state would
    # not; decrypted with a silo's copy of the run's key
    after = _state(tmp_path, run_id)
    tags = [p.terms for p in after.server_state]
    assert tags == [(f"round-{ROUNDS}/server/m",), (f"round-{ROUNDS}/server/v",)]
    assert before.server_state[0].codec == "packed" and before.server_state[0].key_id == before.key_id
    he = he_config(load_pipeline(pipeline))
    secret = read_key_file(str(tmp_path / "checkpoints" / run_id / "keys" / "cleveland.key"), he, secret=True)
    codec = keys_from_secret(he, secret).codec()
    v_then, v_now = codec.decode(before.server_state[1]), codec.decode(after.server_state[1])
    assert v_then.max() > 0 and (v_now >= 0.99 ** (ROUNDS - before.round + 1) * v_then - 1e-9).all()
    # Each silo's privacy accountant was reloaded from its node, not restarted: epsilon grew
    # every round across the kill (a fresh accountant would fall back to round 1's epsilon)
    for silo in ("cleveland", "hungary", "switzerland", "long-beach"):
        spent = [m.value for m in _metric_history(tmp_path, run_id, f"privacy/epsilon/{silo}")]
        assert len(spent) == ROUNDS and all(a < b for a, b in zip(spent, spent[1:], strict=False)), spent
    # A finished run has nothing to resume
    again = _fedsilo(tmp_path, "run", str(pipeline), "--resume", run_id)
    assert again.returncode == 2 and "already finished all 6 rounds: nothing to resume" in again.stderr


def test_resuming_an_unknown_run_says_so(tmp_path: Path) -> None:
    result = _fedsilo(tmp_path, "run", str(_pipeline(tmp_path)), "--resume", "0123abcd")
    assert result.returncode == 2
    assert "no checkpoint for run 0123abcd" in result.stderr and "Traceback" not in result.stderr


def test_a_killed_orchestrator_is_replaced_and_the_run_goes_on(ray_local, tmp_path: Path) -> None:
    import ray

    from pipelines.runner import RunOptions, run_federation
    from pipelines.spec import load_pipeline

    # packed HE with secure aggregation (4 silos): the replacement registers its own signing key
    pipeline = _pipeline(tmp_path)
    text = pipeline.read_text().replace("sqlite:///mlruns.db", f"sqlite:///{tmp_path / 'mlruns.db'}")
    pipeline.write_text(text)
    namespace = ray.get_runtime_context().namespace
    killed: list[int] = []

    def kill_once_round_two_is_saved() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            seen = _checkpointed_round(tmp_path)
            if seen and seen[1] >= 2:
                ray.kill(ray.get_actor("orchestrator", namespace=namespace))
                killed.append(seen[1])
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_once_round_two_is_saved, daemon=True)
    killer.start()
    summary = run_federation(load_pipeline(pipeline), RunOptions())
    killer.join(timeout=5)
    assert killed and killed[0] < ROUNDS
    assert summary.rounds_completed == ROUNDS
    assert [r["round"] for r in summary.per_round] == list(range(1, ROUNDS + 1))
    assert _metric_steps(tmp_path, summary.run_id, "round/participants") == list(range(1, ROUNDS + 1))

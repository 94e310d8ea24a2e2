"""Placement on a real multi-node Ray cluster, and a silo that cannot be placed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.placement import PlacementError
from tests.conftest import example_pipeline_text

pytestmark = pytest.mark.slow


def test_each_silo_runs_on_its_organizations_node(tmp_path: Path) -> None:
    # Prepare
    pipeline = tmp_path / "pipeline.toml"
    text = example_pipeline_text(rounds="2") + '\n[resources]\nplacement = "pinned"\ncpus_per_silo = 0.5\n'
    pipeline.write_text(text)
    out = tmp_path / "out.json"
    # Execute
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": f"{repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run(
        [sys.executable, "-m", "tests.pipelines.cluster_federation", str(pipeline), str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    # Assert
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    placed = {name: row["node"] for name, row in report["summary"]["per_silo"].items()}
    assert placed == report["nodes"]  # every silo on the node that offers silo:<name>
    assert len(set(placed.values())) == 4
    assert report["summary"]["rounds_completed"] == 2


def test_a_silo_no_node_can_take_fails_within_the_bounded_wait(ray_local, tmp_path: Path) -> None:
    from pipelines.runner import RunOptions, run_federation
    from pipelines.spec import load_pipeline

    pipeline = tmp_path / "pipeline.toml"
    text = example_pipeline_text().replace("sqlite:///mlruns.db", f"sqlite:///{tmp_path / 'mlruns.db'}")
    pipeline.write_text(text + "\n[resources]\ncpus_per_silo = 64\nplacement_timeout_s = 3\n")
    with pytest.raises(PlacementError) as caught:
        run_federation(load_pipeline(pipeline), RunOptions())
    message = str(caught.value)
    assert "silo 'cleveland' was not placed within 3s: no node has free {CPU: 64}" in message

"""`fedsilo submit`: a pipeline as a Ray job on a real head (`ray start --head`, dashboard on 127.0.0.1)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.spec import bundled_example, load_pipeline
from pipelines.submit import SubmitError, check_portable, submit
from tests.conftest import example_pipeline_text, free_port, ray_head


@pytest.fixture
def ray_head_with_dashboard(tmp_path: Path) -> Iterator[str]:
    """`ray start --head --block` with its dashboard (the job server); stopped by the test."""
    dashboard, agent, agent_grpc = free_port(), free_port(), free_port()
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    env["PATH"] = f"{bin_dir}:{env['PATH']}"  # jobs run `fedsilo` from this installation
    with ray_head(
        "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
        # the agents' default ports may be taken by another head on a shared machine
        "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(agent_grpc),
        env=env, cwd=tmp_path, wait_port=dashboard, timeout_s=120,
    ):  # fmt: skip
        yield f"http://127.0.0.1:{dashboard}"


@pytest.mark.slow
def test_submit_runs_the_pipeline_as_a_ray_job(ray_head_with_dashboard: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    store = f"sqlite:///{tmp_path / 'mlruns.db'}"  # absolute: the job runs in its own folder
    pipeline = tmp_path / "pipeline.toml"
    pipeline.write_text(example_pipeline_text(mlflow_uri=f'"{store}"', he='"off"'))
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    wrong_token = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "submit", str(pipeline),
         "--address", ray_head_with_dashboard],
        cwd=tmp_path, env={**env, "RAY_AUTH_TOKEN": "x" * 64}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert wrong_token.returncode == 1 and "Traceback" not in wrong_token.stderr
    assert f"cannot submit to {ray_head_with_dashboard}: " in wrong_token.stderr, wrong_token.stderr[-2000:]

    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "submit", str(pipeline), "--address", ray_head_with_dashboard,
         "--rounds", "2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=500,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "SUCCEEDED" in result.stdout
    assert "registered heart-disease-classifier version 1" in result.stdout  # the job's log, streamed
    (run,) = MlflowClient(store).search_runs(
        [MlflowClient(store).get_experiment_by_name("heart-disease").experiment_id]
    )
    assert run.info.status == "FINISHED" and run.data.tags["fedsilo.trigger"] == "ray-job"
    assert len(MlflowClient(store).get_metric_history(run.info.run_id, "round/participants")) == 2


def test_relative_paths_are_refused_naming_the_field() -> None:
    loaded = load_pipeline(bundled_example())  # relative silo paths, relative sqlite store
    with pytest.raises(Exception) as caught:
        check_portable(loaded)
    problems = caught.value.problems  # type: ignore[attr-defined]
    assert problems[0].startswith("pipeline.toml: silos.0.path: 'processed.cleveland.data' is relative")
    assert any("tracking.mlflow_uri" in p for p in problems) and len(problems) == 5


def test_nothing_at_the_address_is_a_clear_error(tmp_path: Path) -> None:
    pipeline = tmp_path / "pipeline.toml"
    pipeline.write_text(example_pipeline_text(mlflow_uri=f'"sqlite:///{tmp_path}/m.db"'))
    address = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SubmitError, match=f"cannot submit to {address}: nothing answers there"):
        submit(load_pipeline(pipeline), address)

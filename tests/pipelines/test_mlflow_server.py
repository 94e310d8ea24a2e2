"""A scheduled federation against a real MLflow tracking server (infra/mlflow-server.sh) over HTTP.

The server is started by the test on 127.0.0.1 (sqlite backend, served artifact root) and
stopped by it; everything is read back through MLflow's client.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import requests

from tests.conftest import EXAMPLE_DIR, HEART_COLUMNS, example_pipeline_text, free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """infra/mlflow-server.sh on a free port, its store under tmp_path; stopped by the test."""
    port = free_port()
    env = {**os.environ, "STORE": str(tmp_path / "server"), "PORT": str(port), "WORKERS": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # fmt: skip
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        ["bash", str(REPO / "infra" / "mlflow-server.sh")], env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{uri}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                output = (tmp_path / "server.log").read_text()[-2000:]
                raise RuntimeError(f"mlflow server did not start: {output}")
            time.sleep(0.5)
        yield uri
    finally:
        os.killpg(server.pid, 15)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
        log.close()


@pytest.mark.slow
def test_a_scheduled_federation_logs_and_registers_through_the_server(
    mlflow_server: str, tmp_path: Path
) -> None:
    """`fedsilo schedule` (a cron firing every second, one run, the fires during it skipped) runs a
    federation that logs, stores artifacts and registers its model through the server."""
    import mlflow
    from mlflow import MlflowClient

    pipeline = tmp_path / "pipeline.toml"
    text = example_pipeline_text(mlflow_uri=f'"{mlflow_server}"', he='"off"')
    pipeline.write_text(text + '\n[schedule]\ncron = "* * * * * *"\n')
    rounds = 2

    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "schedule", str(pipeline), "--rounds", str(rounds),
         "--max-runs", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=400,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr[-3000:]
    history = tmp_path / "fedsilo-schedule" / "heart-disease.runs.jsonl"
    entries = [json.loads(line) for line in history.read_text().splitlines()]
    (entry,) = [e for e in entries if e["status"] == "finished"]  # the fires during it: skipped
    assert {e["status"] for e in entries} <= {"finished", "skipped"}
    assert "scheduled run for" in result.stderr  # each run is logged
    client = MlflowClient(mlflow_server)
    run = client.get_run(entry["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["fedsilo.trigger"] == "schedule"
    assert run.data.tags["fedsilo.schedule.fire_time"] == entry["fire_time"]
    assert run.data.params["rounds"] == "20" and run.data.params["silos.0.name"] == "cleveland"
    assert run.data.tags["fedsilo.he.scheme"] == "off"
    for name in ("global/val_accuracy", "round/participants"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, name)]
        expected = list(range(rounds + 1)) if name.startswith("global") else list(range(1, rounds + 1))
        assert sorted(steps) == expected, name  # every round once: no gap, no duplicate
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"pipeline.toml", "model_card.md", "summary.json"} <= artifacts
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # served by the server, not a local path
    stored = list((tmp_path / "server" / "artifacts").rglob("pipeline.toml"))
    assert stored and stored[0].read_text() == pipeline.read_text()
    version = client.get_model_version_by_alias("heart-disease-classifier", "challenger")
    assert version.run_id == run.info.run_id
    mlflow.set_tracking_uri(mlflow_server)
    model = mlflow.pyfunc.load_model("models:/heart-disease-classifier@challenger")
    rows = pd.read_csv(EXAMPLE_DIR / "processed.cleveland.data", header=None, names=HEART_COLUMNS,
                       na_values=["?"]).drop(columns=["num"]).head(5)  # fmt: skip
    predictions = model.predict(rows)
    assert len(predictions) == 5 and set(predictions["prediction"]) <= {0, 1}
    assert predictions["probability"].between(0, 1).all()


def test_an_unreachable_tracking_server_is_a_clear_error_before_training(tmp_path: Path) -> None:
    pipeline = tmp_path / "pipeline.toml"
    closed = f"http://127.0.0.1:{free_port()}"
    pipeline.write_text(example_pipeline_text(mlflow_uri=f'"{closed}"'))
    start = time.monotonic()

    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", str(pipeline)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert result.returncode == 1
    assert f"cannot reach the MLflow tracking server at {closed}" in result.stderr
    assert "Traceback" not in result.stderr and "setting up" not in result.stdout
    assert time.monotonic() - start < 60

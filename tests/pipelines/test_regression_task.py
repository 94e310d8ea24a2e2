"""A regression task (docs/examples/diabetes): scikit-learn's diabetes data across three clinics,
kind = "regression", under packed HE on the session's Ray; R² per clinic and overall; a warm start
from the registered version and the gate on R² between the two."""

from __future__ import annotations

import importlib.util
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from pipelines.registry import RegistryError
from tests.conftest import kept_in, run_in_process

pytestmark = pytest.mark.slow
EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "diabetes"
CLINICS = ("north", "central", "south")


def test_diabetes_progression_across_three_clinics(ray_local: None, tmp_path: Path) -> None:
    for name in ("diabetes_task.py", "pipeline.toml"):
        shutil.copy(EXAMPLE / name, tmp_path / name)
    spec = importlib.util.spec_from_file_location("make_clinics", EXAMPLE / "make_clinics.py")
    assert spec is not None and spec.loader is not None
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    maker.write_clinics(tmp_path)  # the test writes the clinics' CSVs from sklearn's bundled data
    pipeline = tmp_path / "pipeline.toml"
    pipeline.write_text(kept_in(pipeline.read_text(), tmp_path))

    summary, output = run_in_process(pipeline, rounds=12)

    final = summary["final"]
    assert set(final["metrics"]) == {"loss", "mse", "mae", "r2"}
    assert 0.3 < final["metrics"]["r2"] < 1 and final["metrics"]["mse"] == final["metrics"]["loss"]
    assert set(final["silos"]) == set(CLINICS)
    assert all(not math.isnan(final["silos"][c]["r2"]) for c in CLINICS)
    assert "val r2" in output and "north" in output
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns.db'}")
    client = mlflow.MlflowClient()
    history = client.get_metric_history(summary["run_id"], "global/r2")
    assert sorted(m.step for m in history) == list(range(13))
    model = mlflow.pyfunc.load_model(f"models:/diabetes-progression/{summary['registered_model']['version']}")
    rows = pd.read_csv(tmp_path / "south.csv").head(5)
    predicted = model.predict(rows.drop(columns=["progression"]))
    assert list(predicted.columns) == ["progression"] and predicted["progression"].between(0, 400).all()

    # The next run warm-starts from version 1: round 0's figures are version 1's final ones
    text = pipeline.read_text().replace(
        "[training]", '[model]\nfrom = "models:/diabetes-progression/1"\n\n[training]'
    )
    warm = tmp_path / "warm.toml"
    warm.write_text(text)
    second, _ = run_in_process(warm, rounds=1)
    start = {m.step: m.value for m in client.get_metric_history(second["run_id"], "global/r2")}
    assert abs(start[0] - final["metrics"]["r2"]) < 1e-4
    tags = client.get_model_version("diabetes-progression", "2").tags
    assert tags["fedsilo.warm_start"] == "models:/diabetes-progression/1"
    # The gate on a task's own figure: every clinic scores both versions on its validation rows
    import io

    from rich.console import Console

    from pipelines.evaluate import evaluate_models
    from pipelines.spec import load_pipeline

    v1, v2, quiet = (
        "models:/diabetes-progression/1",
        "models:/diabetes-progression/2",
        Console(file=io.StringIO()),
    )
    gate = evaluate_models(load_pipeline(warm), v2, v1, "r2", 0.05, quiet)
    assert [s.silo for s in gate.silos] == list(CLINICS) and all(s.delta is not None for s in gate.silos)
    assert (
        gate.aggregate_delta is not None
        and abs(gate.challenger.metrics["r2"] - second["final"]["metrics"]["r2"]) < 1e-6
    )
    with pytest.raises(RegistryError, match=r"--metric accuracy: the models' figures are loss, mae, mse, r2"):
        evaluate_models(load_pipeline(warm), v2, v1, "accuracy", 0.05, quiet)

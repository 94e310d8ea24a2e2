"""A regression task (docs/examples/diabetes): scikit-learn's diabetes data across three clinics,
kind = "regression", under packed HE on the session's Ray; R² per clinic and overall."""

from __future__ import annotations

import importlib.util
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

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

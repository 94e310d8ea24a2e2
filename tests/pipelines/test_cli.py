"""The CLI end to end, as a new user runs it: real Ray, real TenSEAL, a real MLflow store.

Three federations run once per module (the bundled example as shipped, with the packed
codec; the same pipeline with CKKS; and in plaintext); the tests read what they left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import EXAMPLE_DIR, HEART_COLUMNS, example_pipeline_text

pytestmark = pytest.mark.slow
ROUNDS = 5
MODEL = "heart-disease-classifier"


def fedsilo(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass(frozen=True)
class Runs:
    folder: Path
    he: dict  # the bundled example as shipped: he = "packed"
    plain: dict  # the same with he = "off" (ckks rounds: tests/orchestrator/test_orchestrator.py)
    he_output: str


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    folder = tmp_path_factory.mktemp("cli")
    he = fedsilo("run", "--rounds", str(ROUNDS), "--summary-json", "he.json", cwd=folder)
    assert he.returncode == 0, he.stderr[-3000:]
    for scheme in ("off",):
        pipeline = folder / f"{scheme}.toml"
        pipeline.write_text(example_pipeline_text(he=f'"{scheme}"'))
        result = fedsilo("run", str(pipeline), "--rounds", str(ROUNDS), "--summary-json", f"{scheme}.json",
                         cwd=folder)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
    summaries = {name: json.loads((folder / f"{name}.json").read_text()) for name in ("he", "off")}
    return Runs(folder, summaries["he"], summaries["off"], he.stdout)


def _mlflow(runs: Runs):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{runs.folder / 'mlruns.db'}")
    return mlflow


def test_summary_json_has_every_field(runs: Runs) -> None:
    s = runs.he
    assert s["run_id"] and s["tracking_uri"] == f"sqlite:///{runs.folder / 'mlruns.db'}"
    assert s["experiment"] == "heart-disease" and s["he"] == "packed"
    assert s["rounds"] == ROUNDS and s["rounds_completed"] == ROUNDS
    assert s["silos"] == ["cleveland", "hungary", "switzerland", "long-beach"]
    assert set(s["final"]) >= {"global_val_accuracy", "global_val_loss"}
    assert [r["round"] for r in s["per_round"]] == list(range(1, ROUNDS + 1))
    for row in s["per_round"]:
        assert row["participants"] == 4 and row["seconds"] > 0 and row["bytes_up"] > 0
        assert 0 <= row["global_val_accuracy"] <= 1
    assert s["per_round"][0]["bytes_down"] == 0 and s["per_round"][1]["bytes_down"] > 0
    assert s["registered_model"]["name"] == MODEL and s["registered_model"]["alias"] == "challenger"
    assert s["model_parameters"] == 23
    assert runs.plain["he"] == "off"


def test_progress_and_summary_table_are_printed(runs: Runs) -> None:
    assert f"{ROUNDS}/{ROUNDS}" in runs.he_output
    assert "global" in runs.he_output and "registered heart-disease-classifier version" in runs.he_output


def _weights(runs: Runs, summary: dict) -> np.ndarray:
    mlflow = _mlflow(runs)
    version = summary["registered_model"]["version"]
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}/{version}").unwrap_python_model()
    return np.concatenate([t.detach().numpy().ravel() for t in model.program.state_dict.values()])


def test_packed_run_ends_within_a_thousandth_of_the_plaintext_model(runs: Runs) -> None:
    assert np.abs(_weights(runs, runs.he) - _weights(runs, runs.plain)).max() < 1e-3
    gap = abs(runs.he["final"]["global_val_accuracy"] - runs.plain["final"]["global_val_accuracy"])
    assert gap <= 0.005


def test_bytes_per_round(runs: Runs) -> None:
    def up(summary: dict) -> float:
        return float(np.mean([r["bytes_up"] for r in summary["per_round"]]))

    assert up(runs.plain) == 4 * 23 * 8  # float64 plaintext
    assert up(runs.he) < 4 * 60_000  # one seeded BFV ciphertext per silo (a CKKS one is ~235 kB)


def test_registered_model_predicts_from_raw_columns(runs: Runs) -> None:
    mlflow = _mlflow(runs)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@challenger")
    raw = pd.read_csv(EXAMPLE_DIR / "processed.va.data", header=None, names=HEART_COLUMNS, na_values=["?"])
    features = raw.drop(columns=["num"])
    predictions = model.predict(features)
    assert list(predictions.columns) == ["prediction", "probability"]
    assert len(predictions) == len(raw)
    assert set(predictions["prediction"]) <= {0, 1}
    assert predictions["probability"].between(0, 1).all()
    assert ((predictions["probability"] >= 0.5).astype(int) == predictions["prediction"]).all()
    accuracy = (predictions["prediction"] == (raw["num"] > 0).astype(int)).mean()
    assert accuracy > 0.6
    as_text = pd.read_csv(EXAMPLE_DIR / "processed.va.data", header=None, names=HEART_COLUMNS, dtype=str)
    again = model.predict(as_text.drop(columns=["num"]))
    np.testing.assert_allclose(again["probability"], predictions["probability"], rtol=1e-6)


def test_registry_has_signature_example_alias_and_tags(runs: Runs) -> None:
    mlflow = _mlflow(runs)
    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias(MODEL, "challenger")
    assert str(version.version) == runs.plain["registered_model"]["version"]  # the latest run is challenger
    assert version.tags["fedsilo.he"] == "off" and version.tags["fedsilo.silos"].startswith("cleveland")
    info = mlflow.models.get_model_info(f"models:/{MODEL}@challenger")
    assert [c.name for c in info.signature.inputs.inputs] == HEART_COLUMNS[:-1]
    assert [c.name for c in info.signature.outputs.inputs] == ["prediction", "probability"]
    assert info.saved_input_example_info is not None


def test_run_has_params_metrics_tags_and_artifacts(runs: Runs) -> None:
    mlflow = _mlflow(runs)
    client = mlflow.MlflowClient()
    run = client.get_run(runs.he["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["training.lr"] == "0.05" and run.data.params["silos.0.name"] == "cleveland"
    tags = run.data.tags
    assert tags["fedsilo.he.scheme"] == "packed" and tags["fedsilo.he.poly_modulus_degree"] == "4096"
    assert tags["fedsilo.he.value_bits"] == "16" and tags["fedsilo.he.lanes"] == "3"
    assert tags["fedsilo.silos"] == "cleveland,hungary,switzerland,long-beach"
    accuracy = client.get_metric_history(run.info.run_id, "global/val_accuracy")
    assert sorted(m.step for m in accuracy) == list(range(0, ROUNDS + 1))
    participants = client.get_metric_history(run.info.run_id, "round/participants")
    assert sorted(m.step for m in participants) == list(range(1, ROUNDS + 1))
    assert {m.value for m in participants} == {4.0}
    for name in ("global/val_auc", "round/bytes_up", "round/bytes_down", "round/seconds",
                 "silo/hungary/val_accuracy", "silo/long-beach/train_loss"):  # fmt: skip
        assert client.get_metric_history(run.info.run_id, name), name
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"pipeline.toml", "metrics.png", "model_card.md", "summary.json"} <= artifacts
    card = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/model_card.md")
    assert "packed" in card and "cleveland" in card


def test_validate_the_bundled_example() -> None:
    from pipelines.spec import bundled_example

    result = fedsilo("validate", str(bundled_example()), cwd=Path.cwd())
    assert result.returncode == 0, result.stderr
    assert "is valid" in result.stdout and "long-beach" in result.stdout
    assert "secure aggregation pairwise masks, threshold 3 of 4 silos" in " ".join(result.stdout.split())


def test_validate_names_the_line_to_fix(tmp_path: Path) -> None:
    pipeline = tmp_path / "pipeline.toml"
    pipeline.write_text(example_pipeline_text(lr="-0.5"))
    result = fedsilo("validate", str(pipeline), cwd=tmp_path)
    assert result.returncode == 2
    line = next(i for i, t in enumerate(pipeline.read_text().splitlines(), 1) if t.startswith("lr ="))
    assert f"pipeline.toml:{line}: training.lr: Input should be greater than 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_names_the_silo_with_bad_data(tmp_path: Path) -> None:
    bad = tmp_path / "va.csv"
    bad.write_text((EXAMPLE_DIR / "processed.va.data").read_text().replace("63,1,4,140", "63,1,4,high", 1))
    pipeline = tmp_path / "pipeline.toml"
    pipeline.write_text(example_pipeline_text().replace(str(EXAMPLE_DIR / "processed.va.data"), str(bad)))
    result = fedsilo("validate", str(pipeline), cwd=tmp_path)
    assert result.returncode == 2
    assert "silo 'long-beach': column 'trestbps' has non-numeric value 'high' (line 1)" in result.stderr


def test_run_with_a_missing_silo_file_fails_cleanly(tmp_path: Path) -> None:
    pipeline = tmp_path / "pipeline.toml"
    pipeline.write_text(example_pipeline_text().replace("processed.hungarian.data", "nowhere.data"))
    result = fedsilo("run", str(pipeline), "--rounds", "1", cwd=tmp_path)
    assert result.returncode == 2
    assert "silo 'hungary': data file" in result.stderr and "does not exist on this node" in result.stderr
    assert "Traceback" not in result.stderr and "RayTaskError" not in result.stderr

"""Skewed hospitals join, through the CLI as a user runs it: a referral centre whose rows are all
positive and a clinic with 20 rows train with two ordinary hospitals under packed HE; the
single-class silo's AUC is undefined (NaN in the summary, absent from MLflow's metrics, with
the reason as a tag), its accuracy a number; the gate runs on AUC and the model is registered.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXAMPLE_DIR, example_pipeline_text
from tests.pipelines.test_cli import fedsilo

pytestmark = pytest.mark.slow
MODEL = "heart-disease-classifier"


@dataclass(frozen=True)
class Skewed:
    folder: Path
    first: dict[str, Any]  # run summaries
    second: dict[str, Any]
    output: str  # what the second `fedsilo run` printed
    gate: dict[str, Any]  # `fedsilo evaluate --json`
    gate_exit: int


@pytest.fixture(scope="module")
def skewed(tmp_path_factory: pytest.TempPathFactory) -> Skewed:
    folder = tmp_path_factory.mktemp("skewed")
    swiss = [line for line in (EXAMPLE_DIR / "processed.switzerland.data").read_text().splitlines()
             if int(line.rsplit(",", 1)[1]) > 0]  # fmt: skip
    (folder / "switzerland.data").write_text("\n".join(swiss) + "\n")
    va = (EXAMPLE_DIR / "processed.va.data").read_text().splitlines()[:20]
    (folder / "va.data").write_text("\n".join(va) + "\n")
    text = example_pipeline_text().replace(str(EXAMPLE_DIR / "processed.switzerland.data"),
                                           str(folder / "switzerland.data"))  # fmt: skip
    pipeline = folder / "pipeline.toml"
    pipeline.write_text(text.replace(str(EXAMPLE_DIR / "processed.va.data"), str(folder / "va.data")))

    def run(name: str, rounds: int) -> tuple[dict[str, Any], str]:
        done = fedsilo("run", str(pipeline), "--rounds", str(rounds), "--summary-json", f"{name}.json",
                       cwd=folder)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads((folder / f"{name}.json").read_text()), done.stdout

    first, _ = run("first", 2)
    promoted = fedsilo("promote", MODEL, "1", "--tracking-uri", "sqlite:///mlruns.db", cwd=folder)
    assert promoted.returncode == 0, promoted.stderr[-3000:]
    second, output = run("second", 3)
    gate = fedsilo("evaluate", str(pipeline), "--model", f"models:/{MODEL}/2", "--against",
                   f"models:/{MODEL}@champion", "--metric", "auc", "--json", cwd=folder)  # fmt: skip
    assert gate.returncode in (0, 1), gate.stderr[-3000:]
    return Skewed(folder, first, second, output, json.loads(gate.stdout), gate.returncode)


def test_every_silo_trains_every_round_and_the_model_is_registered(skewed: Skewed) -> None:
    s = skewed.second
    assert s["he"] == "packed" and s["rounds_completed"] == 3
    assert all(r["participants"] == 4 and not r["failures"] for r in s["per_round"])
    assert s["registered_model"] == {"name": MODEL, "version": "2", "alias": "challenger"}
    assert s["per_silo"]["long-beach"]["val_rows"] == 4  # 20 rows: a fifth validates
    assert "a single class '1' in 'num'" in skewed.output  # the silo table's warning


def test_the_single_class_silos_auc_is_undefined_and_its_accuracy_a_number(skewed: Skewed) -> None:
    swiss = skewed.second["per_silo"]["switzerland"]
    assert math.isnan(swiss["val_auc"]) and 0 < swiss["val_accuracy"] <= 1
    assert swiss["undefined"] == {"auc": "a single class in its validation rows"}
    assert math.isnan(skewed.second["final"]["silos"]["switzerland"]["auc"])
    final = skewed.second["final"]
    assert 0.5 < final["global_val_auc"] <= 1 and final["metrics"]["auc"] == final["global_val_auc"]
    for silo in ("cleveland", "hungary", "long-beach"):
        assert 0 <= final["silos"][silo]["auc"] <= 1
    assert "NaN: silo switzerland's auc is undefined (a single class in its validation rows)" in skewed.output


def test_mlflow_has_no_number_for_the_undefined_auc_and_says_why(skewed: Skewed) -> None:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{skewed.folder / 'mlruns.db'}")
    run = client.get_run(skewed.second["run_id"])
    assert client.get_metric_history(run.info.run_id, "silo/switzerland/val_auc") == []
    accuracy = client.get_metric_history(run.info.run_id, "silo/switzerland/val_accuracy")
    assert sorted(m.step for m in accuracy) == list(range(0, 4)) and all(0 <= m.value <= 1 for m in accuracy)
    assert len(client.get_metric_history(run.info.run_id, "silo/long-beach/val_auc")) == 4
    tags = run.data.tags
    assert tags["fedsilo.undefined.silo/switzerland/val_auc"] == "a single class in its validation rows"
    assert "single class '1'" in tags["data/switzerland/warning"]


def test_the_gate_leaves_the_single_class_silo_out_and_decides_on_the_others(skewed: Skewed) -> None:
    gate = skewed.gate
    rows = {row["silo"]: row for row in gate["silos"]}
    assert rows["switzerland"]["delta"] is None and rows["switzerland"]["undefined"]
    assert math.isnan(rows["switzerland"]["challenger"]["auc"])  # NaN in gate.json and the table
    assert 0 <= rows["switzerland"]["challenger"]["accuracy"] <= 1
    assert gate["notes"] == [
        "silo switzerland: metric undefined (a single class in its validation rows): "
        "neither passes nor fails its margin"
    ]
    assert all(isinstance(rows[s]["delta"], float) for s in ("cleveland", "hungary", "long-beach"))
    assert not any("switzerland" in reason for reason in gate["reasons"])
    assert gate["passed"] == (skewed.gate_exit == 0)
    import mlflow

    uri = f"sqlite:///{skewed.folder / 'mlruns.db'}"
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    tags = client.get_model_version(MODEL, "2").tags
    assert json.loads(tags["fedsilo.gate.undefined"]) == {
        "switzerland": "a single class in its validation rows"
    }
    assert tags["fedsilo.gate.metric"] == "auc" and tags["fedsilo.gate.passed"] == str(gate["passed"]).lower()
    gate_metrics = client.get_run(tags["fedsilo.gate.run_id"]).data.metrics
    assert "gate/switzerland/challenger_accuracy" in gate_metrics
    assert (
        "gate/switzerland/challenger_auc" not in gate_metrics
        and "gate/hungary/challenger_auc" in gate_metrics
    )

"""A task pipeline through the CLI, as a new user runs it: the bundled breast-ultrasound example
(a task module with its own dataset, CNN and predict) under packed HE, logged, registered, and
served by a pyfunc that needs nothing but the registry."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipelines.spec import bundled_example
from tests.pipelines.test_cli import fedsilo

pytestmark = pytest.mark.slow
MODEL = "breast-ultrasound-classifier"
SILOS = ["riverside", "lakeside", "hillcrest"]
ROUNDS = 2


@dataclass(frozen=True)
class Run:
    folder: Path
    summary: dict[str, Any]
    output: str


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    folder = tmp_path_factory.mktemp("task")
    args = ("--rounds", str(ROUNDS), "--summary-json", "s.json")
    done = fedsilo("run", "--example", "breast-ultrasound", *args, cwd=folder)
    assert done.returncode == 0, done.stderr[-3000:]
    return Run(folder, json.loads((folder / "s.json").read_text()), done.stdout)


def _client(run: Run) -> Any:
    import mlflow

    uri = f"sqlite:///{run.folder / 'mlruns.db'}"
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(uri, registry_uri=uri)


def test_the_summary_has_the_tasks_figures_per_silo_and_overall(run: Run) -> None:
    s = run.summary
    assert s["he"] == "packed" and s["rounds_completed"] == ROUNDS and s["model_parameters"] == 56129
    assert set(s["final"]["metrics"]) == {"loss", "accuracy", "auc"}
    assert set(s["final"]["silos"]) == set(SILOS)
    assert all(0 <= s["final"]["silos"][silo]["accuracy"] <= 1 for silo in SILOS)
    assert [sorted(r["metrics"]) for r in s["per_round"]] == [["accuracy", "auc", "loss"]] * ROUNDS
    assert all(r["participants"] == 3 and r["bytes_up"] > 0 for r in s["per_round"])
    assert {silo: s["per_silo"][silo]["val_rows"] for silo in SILOS} == {"riverside": 61, "lakeside": 38,
                                                                        "hillcrest": 26}  # fmt: skip
    assert "registered breast-ultrasound-classifier version 1" in run.output


def test_mlflow_has_every_figure_per_round_and_the_task_files_hash(run: Run) -> None:
    client = _client(run)
    run_id = run.summary["run_id"]
    for name in ("global/auc", "global/accuracy", "silo/riverside/auc", "silo/hillcrest/loss"):
        assert sorted(m.step for m in client.get_metric_history(run_id, name)) == list(range(ROUNDS + 1)), (
            name
        )
    sha = hashlib.sha256(
        (bundled_example("breast-ultrasound").parent / "breast_task.py").read_bytes()
    ).hexdigest()
    assert client.get_run(run_id).data.tags["fedsilo.task.sha256"] == sha
    assert client.get_model_version(MODEL, "1").tags["fedsilo.task.sha256"] == sha
    assert "task/breast_task.py" in {a.path for a in client.list_artifacts(run_id, "task")}


def test_the_registered_model_predicts_malignancy_from_uint8_images(run: Run) -> None:
    import mlflow
    from PIL import Image

    _client(run)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@challenger")
    folder = bundled_example("breast-ultrasound").parent / "hillcrest"
    names = [line.split(",")[0] for line in (folder / "labels.csv").read_text().splitlines()[1:9]]
    images = np.stack([np.asarray(Image.open(folder / n)) for n in names])
    assert images.dtype == np.uint8 and images.shape == (8, 28, 28)
    out = model.predict(images)
    assert list(out.columns) == ["prediction", "probability"] and len(out) == 8
    assert set(out["prediction"]) <= {"malignant", "benign"} and out["probability"].between(0, 1).all()
    assert ((out["probability"] >= 0.5) == (out["prediction"] == "malignant")).all()
    assert not math.isnan(float(out["probability"].sum()))


def test_a_task_whose_dataset_raises_stops_the_run_naming_silo_and_function(tmp_path: Path) -> None:
    source = bundled_example("breast-ultrasound").parent
    (tmp_path / "breast_task.py").write_text(
        (source / "breast_task.py").read_text().replace(
            "    folder = Path(ctx.path)\n", "    folder = Path(ctx.path)\n    if ctx.silo == 'lakeside':\n"
            "        raise FileNotFoundError('labels.csv is on another disk')\n"
        )
    )  # fmt: skip
    text = bundled_example("breast-ultrasound").read_text()
    for silo in SILOS:
        text = text.replace(f'path = "{silo}"', f'path = "{source / silo}"')
    (tmp_path / "pipeline.toml").write_text(text)
    done = fedsilo("run", "pipeline.toml", "--rounds", "1", cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert ("silo 'lakeside': dataset(ctx, 'train') raised FileNotFoundError: labels.csv is on another disk"
            in done.stderr)  # fmt: skip
    assert "Traceback" not in done.stderr

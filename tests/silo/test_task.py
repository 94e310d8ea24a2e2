"""The task contract: loading a task module, kind defaults, bad modules named by silo and line."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from silo.task import TaskContext, TaskError, TaskSpec, load_task
from silo.task_kinds import defaults

GOOD = """
import torch
from torch.utils.data import TensorDataset

def dataset(ctx, split):
    g = torch.Generator().manual_seed(ctx.seed)
    x = torch.randn(10, 3, generator=g)
    return TensorDataset(x, (x[:, :1] > 0).float())

def model(config):
    return torch.nn.Linear(3, int(config.get("outputs", 1)))
"""


def _write(tmp_path: Path, text: str, name: str = "my_task.py") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_task_file_next_to_the_pipeline_loads_with_its_kinds_defaults(tmp_path: Path) -> None:
    _write(tmp_path, GOOD)
    task = load_task("my_task.py", tmp_path, kind="binary")
    assert task.sha256 and len(task.sha256) == 64 and task.source == str(tmp_path / "my_task.py")
    assert task.loss is defaults("binary")["loss"] and task.predict is None
    data = task.dataset(TaskContext(tmp_path, "a", {}, 3), "train")
    assert len(data) == 10 and TaskSpec.read("my_task.py", tmp_path).module == str(tmp_path / "my_task.py")


def test_an_importable_module_loads_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "clinic_tasks").mkdir()
    (tmp_path / "clinic_tasks" / "__init__.py").write_text("")
    _write(tmp_path / "clinic_tasks", GOOD, "survival.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    task = load_task("clinic_tasks.survival", kind="regression")
    assert task.kind == "regression" and task.source == str(tmp_path / "clinic_tasks" / "survival.py")
    assert task.loss is defaults("regression")["loss"] and len(task.sha256) == 64


def test_a_task_that_does_not_import_names_the_silo_and_the_line(tmp_path: Path) -> None:
    _write(tmp_path, "import torch\n\nx = 1\nraise RuntimeError('no weights here')\n", "broken.py")
    with pytest.raises(TaskError, match=r"silo 'east': task file broken.py does not import: "
                       r"RuntimeError: no weights here \(line 4\)"):  # fmt: skip
        load_task("broken.py", tmp_path, silo="east")
    _write(tmp_path, "def dataset(ctx, split:\n    pass\n", "syntax.py")
    with pytest.raises(TaskError, match=r"syntax.py does not import: SyntaxError: .*\(line 1\)"):
        load_task("syntax.py", tmp_path)


def test_a_task_without_dataset_or_model_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, "def model(config):\n    return None\n", "half.py")
    with pytest.raises(TaskError, match=r"task half.py lacks dataset\(\)"):
        load_task("half.py", tmp_path)
    with pytest.raises(TaskError, match=r"does not exist on this node"):
        load_task("nowhere.py", tmp_path)
    body = GOOD + "\ndef loss(outputs, target):\n    return (outputs - target).pow(2)[:, 0]\n"
    _write(tmp_path, body + "\ndef metrics(outputs, target):\n    return {}\n", "nofinal.py")
    with pytest.raises(TaskError, match=r"defines metrics\(\) but no finalize\(\)"):
        load_task("nofinal.py", tmp_path)
    _write(tmp_path, GOOD)
    with pytest.raises(TaskError, match=r"kind 'ranking'"):
        load_task("my_task.py", tmp_path, kind="ranking")


def test_binary_defaults_give_loss_accuracy_and_auc_with_nan_where_undefined() -> None:
    hooks = defaults("binary")
    logits = torch.tensor([[2.0], [-1.0], [0.5], [-3.0]])
    target = torch.tensor([[1.0], [0.0], [0.0], [0.0]])
    assert hooks["loss"](logits, target).shape == (4,)
    figures = hooks["finalize"](hooks["metrics"](logits, target))
    assert figures["accuracy"] == 0.75 and figures["auc"] == 1.0
    one_class = hooks["finalize"](hooks["metrics"](logits, torch.ones(4, 1)))
    assert math.isnan(one_class["auc"]) and one_class["accuracy"] == 0.5
    empty = hooks["finalize"](hooks["metrics"](torch.zeros(0, 1), torch.zeros(0, 1)))
    assert all(math.isnan(v) for v in empty.values())


def test_multiclass_defaults_count_per_class() -> None:
    hooks = defaults("multiclass")
    logits = torch.tensor([[3.0, 0, 0], [0, 3.0, 0], [3.0, 0, 0], [0, 0, 3.0]])
    sums = hooks["metrics"](logits, torch.tensor([0, 1, 1, 2]))
    assert list(sums["class_count"]) == [1, 2, 1] and list(sums["class_correct"]) == [1, 1, 1]
    figures = hooks["finalize"](sums)
    assert figures["accuracy"] == 0.75 and figures["balanced_accuracy"] == pytest.approx((1 + 0.5 + 1) / 3)


def test_regression_r2_is_undefined_for_a_constant_target() -> None:
    hooks = defaults("regression")
    figures = hooks["finalize"](
        hooks["metrics"](torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 4.0]))
    )
    assert figures["mse"] == pytest.approx(1 / 3) and figures["mae"] == pytest.approx(1 / 3)
    assert figures["r2"] == pytest.approx(1 - 1 / (14 / 3))
    constant = hooks["finalize"](hooks["metrics"](torch.tensor([1.0, 2.0]), torch.tensor([5.0, 5.0])))
    assert math.isnan(constant["r2"]) and constant["mse"] == pytest.approx(12.5)


values = st.lists(st.floats(-100, 100, allow_nan=False), min_size=1, max_size=30)


@given(st.lists(st.tuples(values, st.integers(0, 2**31)), min_size=1, max_size=5))
def test_regression_figures_from_summed_sums_equal_the_pooled_figures(silos: list) -> None:
    hooks = defaults("regression")
    outs, targets, sums = [], [], []
    for ys, seed in silos:
        y = torch.tensor(ys, dtype=torch.float64)
        out = y + torch.from_numpy(np.random.default_rng(seed).normal(size=len(ys)))
        outs.append(out)
        targets.append(y)
        sums.append(hooks["metrics"](out, y))
    added = {k: sum(s[k] for s in sums) for k in sums[0]}
    pooled = hooks["finalize"](hooks["metrics"](torch.cat(outs), torch.cat(targets)))
    for name, value in hooks["finalize"](added).items():
        assert (math.isnan(value) and math.isnan(pooled[name])) or value == pytest.approx(
            pooled[name], rel=1e-6
        )

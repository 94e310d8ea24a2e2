"""A task on its silo: what the user's code does wrong is named by silo and function before round 1,
and a task silo trains and scores through the one loop (driven in-process, as Ray runs it)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from privacy.codec import PlainCodec
from privacy.params import HEConfig
from silo.actor import SiloWorker
from silo.config import ModelSpec, SiloSpec
from silo.messages import FitConfig, FitIns
from silo.task import TaskError, TaskSpec
from silo.task_run import open_task, score

HEADER = """
import torch
from torch.utils.data import TensorDataset

def dataset(ctx, split):
    g = torch.Generator().manual_seed(ctx.seed + (0 if split == "train" else 1) + len(ctx.silo))
    x = torch.randn(int(ctx.config.get("rows", 40)), 4, generator=g)
    return TensorDataset(x, (x[:, :1] + x[:, 1:2] > 0).float())
"""
MODEL = """
def model(config):
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
"""
CPU = torch.device("cpu")


def _spec(tmp_path: Path, body: str, kind: str | None = "binary", **config: object) -> TaskSpec:
    (tmp_path / "t.py").write_text(body)
    return TaskSpec.read("t.py", tmp_path, kind, config)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (HEADER.replace("return TensorDataset", "raise OSError('no folder'); return TensorDataset") + MODEL,
         r"silo 'a': dataset\(ctx, 'train'\) raised OSError: no folder"),
        ("import torch\ndef dataset(ctx, split):\n    return [(torch.ones(4), 1.0, 'id')] * 3\n" + MODEL,
         r"silo 'a': dataset\(ctx, 'train'\): dataset items must be \(inputs, target\) pairs, got a list"),
        (HEADER + "def model(config):\n    return 'a model'\n",
         r"silo 'a': model\(config\) returned str, not a torch nn.Module"),
        (HEADER + "def model(config):\n    return torch.nn.Linear(4, 3)\n",
         r"silo 'a': the model's outputs \[2, 3\] and targets \[2, 1\] do not fit loss\(\)"),
        (HEADER + "def model(config):\n    return torch.nn.Linear(5, 1)\n",
         r"silo 'a': model\(inputs\) raised RuntimeError"),
        (HEADER + MODEL + "x = undefined_name\n",
         r"silo 'a': task file t.py does not import: NameError: .* \(line 12\)"),
    ],
)  # fmt: skip
def test_what_the_task_does_wrong_is_named_before_round_1(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(TaskError, match=message):
        open_task(_spec(tmp_path, body), "a", str(tmp_path), 0, CPU)


def test_metrics_that_are_not_sums_are_refused(tmp_path: Path) -> None:
    body = HEADER + MODEL + "def metrics(outputs, target):\n    return {'rows': outputs.tolist()}\n"
    body += "def finalize(sums):\n    return {}\n"
    opened = open_task(_spec(tmp_path, body), "a", str(tmp_path), 0, CPU)
    with pytest.raises(
        TaskError, match=r"silo 'a': metrics\(\) returned 'rows': list; use numbers or arrays"
    ):
        score(opened, "a", CPU)


def test_record_dp_refuses_a_batch_coupled_loss(tmp_path: Path) -> None:
    body = HEADER + MODEL + "def loss(outputs, target):\n    return ((outputs - target) ** 2).mean()\n"
    spec = _spec(tmp_path, body, kind=None)
    open_task(spec, "a", str(tmp_path), 0, CPU)  # fine without DP
    with pytest.raises(
        TaskError, match=r"privacy.dp = 'record' needs loss\(\) to return one value per sample"
    ):
        open_task(spec, "a", str(tmp_path), 0, CPU, record_dp=True)


def test_record_dp_names_the_modules_opacus_cannot_train(tmp_path: Path) -> None:
    body = HEADER + "def model(config):\n    return torch.nn.Sequential(torch.nn.Linear(4, 8), "
    body += "torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 1))\n"
    with pytest.raises(TaskError, match=r"Opacus cannot train this model: .*BatchNorm"):
        open_task(_spec(tmp_path, body), "a", str(tmp_path), 0, CPU, record_dp=True)


def test_a_task_silo_trains_and_scores_through_the_one_loop(tmp_path: Path) -> None:
    spec = _spec(tmp_path, HEADER + MODEL, rows=64)
    silos = [
        SiloWorker(SiloSpec(name, str(tmp_path), None, ModelSpec(), he=HEConfig("off"), task=spec))
        for name in ("ab", "cde")
    ]
    descriptions = [s.describe() for s in silos]
    assert all(d.ok and d.manifest == descriptions[0].manifest for d in descriptions)
    assert descriptions[0].rows == 128 and len(descriptions[0].task_sha256) == 64
    ready = [s.prepare_task() for s in silos]
    assert [r.train_rows for r in ready] == [64, 64] and ready[0].n_parameters == 4 * 8 + 8 + 8 + 1
    config = FitConfig(local_epochs=3, batch_size=16, lr=0.5, local_steps=10)
    payload = None
    for r in range(1, 4):
        results = [s.fit(FitIns(r, payload, config)) for s in silos]
        assert all(not res.has_error() for res in results)
        total = sum(s._staged[0] * s._staged[1] for s in silos if s._staged is not None)
        payload = PlainCodec().encode(total / sum(res.examples for res in results))
    evaluation = silos[0].evaluate(payload)
    assert evaluation.sums is not None and set(evaluation.sums) >= {"loss_sum", "count", "positive_hist"}
    assert evaluation.examples == 64 and evaluation.correct / 64 > 0.8
    assert not math.isnan(evaluation.loss) and np.asarray(evaluation.sums["positive_hist"]).sum() > 0

"""A task on its silo: load it, build its splits and model, check they fit, score a split.

Everything the user's code does wrong is caught here, before round 1 where it can be, and said
with the silo and the function at fault: a task file that does not import, a ``dataset`` that
raises or whose items are not ``(inputs, target)``, a model whose outputs do not fit the loss,
``metrics`` that are not sums.

    pytest tests/silo/test_task_run.py -q
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from silo.exchange import Exchange
from silo.messages import Evaluation
from silo.task import Task, TaskContext, TaskError, TaskSpec
from silo.task_kinds import check_sums
from silo.train import batches, mean_loss, outputs_of

logger = logging.getLogger(__name__)


@dataclass
class OpenTask:
    """A silo's task, ready to train: its splits, its model (on the silo's device) and what it exchanges."""

    task: Task
    train: Dataset[Any]
    val: Dataset[Any]
    model: nn.Module
    exchange: Exchange

    @property
    def rows(self) -> tuple[int, int]:
        return len(self.train), len(self.val)  # type: ignore[arg-type]


def _call(silo: str, task: Task, what: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except TaskError:
        raise
    except Exception as err:
        raise TaskError(f"silo {silo!r}: {what} raised {type(err).__name__}: {err}") from err


def open_task(
    spec: TaskSpec, silo: str, path: str, seed: int, device: torch.device, record_dp: bool = False
) -> OpenTask:
    """Load the task, build both splits and the model (seeded: the same round-0 weights on every
    silo) and run one training batch through model and loss, without a step. ``record_dp``: the
    loss must give one value per sample and Opacus must handle every module."""
    task = spec.load(silo)
    config = dict(spec.config)
    ctx = TaskContext(Path(path).expanduser().resolve(), silo, config, seed)
    splits = {}
    for split in ("train", "val"):
        data = _call(silo, task, f"dataset(ctx, {split!r})", task.dataset, ctx, split)
        if not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
            raise TaskError(
                f"silo {silo!r}: dataset(ctx, {split!r}) returned {type(data).__name__}, not a Dataset"
            )
        splits[split] = data
    if len(splits["train"]) == 0:
        raise TaskError(f"silo {silo!r}: dataset(ctx, 'train') has no rows")
    torch.manual_seed(seed)
    model = _call(silo, task, "model(config)", task.model, config)
    if not isinstance(model, nn.Module):
        raise TaskError(
            f"silo {silo!r}: model(config) returned {type(model).__name__}, not a torch nn.Module"
        )
    model = model.to(device)
    opened = OpenTask(task, splits["train"], splits["val"], model, Exchange(model, spec.buffers))
    if opened.exchange.size == 0:
        raise TaskError(f"silo {silo!r}: model(config) has no trainable parameter to federate")
    per_sample = _dry_run(opened, silo, device)
    if record_dp:
        _check_record_dp(opened.model, per_sample, silo)
    return opened


def _check_record_dp(model: nn.Module, per_sample: bool, silo: str) -> None:
    """DP-SGD clips each sample's gradient: a batch-coupled loss and modules Opacus cannot take
    per-sample gradients of are refused by name (the model is never rewritten behind the user's back)."""
    if not per_sample:
        raise TaskError(
            f"silo {silo!r}: privacy.dp = 'record' needs loss() to return one value per sample; it returns "
            "a scalar (a loss that couples the batch): use dp = 'silo' or a per-sample loss"
        )
    from opacus.validators import ModuleValidator

    was_training = model.training
    model.train()  # Opacus validates a model in training mode
    try:
        errors = ModuleValidator.validate(model, strict=False)
    finally:
        model.train(was_training)
    if errors:
        named = "; ".join(sorted({str(e) for e in errors}))
        raise TaskError(f"silo {silo!r}: privacy.dp = 'record': Opacus cannot train this model: {named}")


def _dry_run(opened: OpenTask, silo: str, device: torch.device) -> bool:
    """One batch through the model and the loss (no step): a mismatch stops the run before round 1.
    Returns whether the loss gives one value per sample."""
    try:
        inputs, target = next(iter(batches(opened.train, 2, None, device)))
    except TypeError as err:
        raise TaskError(f"silo {silo!r}: dataset(ctx, 'train'): {err}") from err
    except Exception as err:
        raise TaskError(f"silo {silo!r}: dataset(ctx, 'train') items cannot be batched: {err}") from err
    was_training = opened.model.training
    try:
        with torch.no_grad():
            outputs = opened.model(inputs)
        try:
            loss, _ = mean_loss(opened.task.loss, outputs, target)
            per_sample = opened.task.loss(outputs, target).dim() == 1
        except Exception as err:
            shapes = f"outputs {_shape(outputs)} and targets {_shape(target)}"
            raise TaskError(f"silo {silo!r}: the model's {shapes} do not fit loss(): {err}") from err
    except TaskError:
        raise
    except Exception as err:
        raise TaskError(f"silo {silo!r}: model(inputs) raised {type(err).__name__}: {err}") from err
    finally:
        opened.model.train(was_training)
    if not torch.isfinite(loss):
        logger.warning("silo %s: the initial model's loss on a first batch is %s", silo, float(loss))
    return per_sample


def _shape(value: Any) -> str:
    return str(list(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


def score(opened: OpenTask, silo: str, device: torch.device) -> Evaluation:
    """The task's metrics over the whole validation split, as sums."""
    if len(opened.val) == 0:  # type: ignore[arg-type]
        return Evaluation(silo, 0, 0.0, 0, sums={"count": 0.0})
    outputs, target = outputs_of(opened.model, opened.val, device)
    try:
        raw = opened.task.metrics(outputs, target)
    except Exception as err:
        raise TaskError(
            f"silo {silo!r}: metrics(outputs, target) raised {type(err).__name__}: {err}"
        ) from err
    try:
        sums = check_sums(raw, silo)
    except TypeError as err:
        raise TaskError(str(err)) from err
    rows = len(opened.val)  # type: ignore[arg-type]
    return Evaluation(silo, rows, float(sums.get("loss_sum", 0.0)), int(sums.get("correct", 0)), sums=sums)

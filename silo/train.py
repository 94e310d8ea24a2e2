"""The one local loop, for every task: seeded batches, the task's loss, the optimizer step,
FedProx and SCAFFOLD terms; and scoring a whole split for the task's metrics.

Tables (the built-in task) are a `TensorDataset` indexed whole; any other dataset goes through a
DataLoader. ``local_train`` runs ``local_epochs`` passes or ``local_steps`` batches.

    pytest tests/silo/test_train.py -q
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from silo.messages import Evaluation, FitConfig
from silo.task_kinds import check_sums, defaults


def make_optimizer(params: Iterable[torch.nn.Parameter], config: FitConfig) -> torch.optim.Optimizer:
    """The local optimizer ``config`` names, as a torch Optimizer (DP-SGD wraps it)."""
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum)


class FunctionalSGD:
    """torch.optim.SGD's step through its functional form, ``torch.optim.sgd.sgd``: the same
    arithmetic (a test checks they agree exactly), without the Optimizer class, whose first use
    in a process imports torch._dynamo (about 1.5 s of CPU in every silo of every run)."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, momentum: float = 0.0) -> None:
        self.params = list(params)
        self.lr, self.momentum = lr, momentum
        self._buffers: list[torch.Tensor | None] = [None] * len(self.params)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        from torch.optim.sgd import sgd

        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        grads = [self.params[i].grad for i in live]
        buffers = [self._buffers[i] for i in live]
        sgd(
            [self.params[i] for i in live], grads, buffers,  # type: ignore[arg-type]
            weight_decay=0.0, momentum=self.momentum, lr=self.lr,
            dampening=0.0, nesterov=False, maximize=False,
        )  # fmt: skip
        for i, buffer in zip(live, buffers, strict=True):
            self._buffers[i] = buffer


def _local_optimizer(params: list[nn.Parameter], config: FitConfig) -> torch.optim.Optimizer | FunctionalSGD:
    if config.optimizer == "adam":
        return make_optimizer(params, config)
    return FunctionalSGD(params, config.lr, config.momentum)


LossFn = Callable[[Any, torch.Tensor], torch.Tensor]
EVAL_BATCH = 1024  # rows scored at a time; metrics still see the whole split at once


def batches(dataset: Dataset[Any], batch_size: int, generator: torch.Generator | None = None,
            device: torch.device | None = None) -> Iterator[tuple[Any, torch.Tensor]]:  # fmt: skip
    """One pass over ``dataset`` as (inputs, target) batches: shuffled with ``torch.randperm`` and
    ``generator`` (RandomSampler's order), or in order without one. Tensors of a `TensorDataset`
    (tables) are indexed whole; any other dataset goes through a DataLoader that collates its items."""
    n = len(dataset)  # type: ignore[arg-type]
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    if isinstance(dataset, TensorDataset):
        inputs, target = dataset.tensors[0], dataset.tensors[-1]
        for start in range(0, n, batch_size):
            index = order[start : start + batch_size].to(inputs.device)
            yield _to(inputs[index], device), _to(target[index], device)
        return
    loader = DataLoader(dataset, batch_size=batch_size, sampler=order.tolist())
    for item in loader:
        if not isinstance(item, list | tuple) or len(item) != 2:
            raise TypeError(f"dataset items must be (inputs, target) pairs, got {_describe(item)}")
        yield _to(item[0], device), _to(item[1], device)


def _to(value: Any, device: torch.device | None) -> Any:
    """``value`` (a tensor, or a dict/list/tuple of tensors) on ``device``."""
    if device is None:
        return value
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to(v, device) for v in value)
    return value


def _describe(item: Any) -> str:
    if isinstance(item, list | tuple):
        return f"a {type(item).__name__} of {len(item)}"
    return type(item).__name__


def mean_loss(loss_fn: LossFn, outputs: Any, target: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The loss to step on and the batch's loss sum: a per-sample vector is averaged; a scalar
    (a loss that couples the batch, such as Cox's) is used as it is."""
    value = loss_fn(outputs, target)
    rows = len(target)
    if value.dim() == 0:
        return value, float(value.detach()) * rows
    if value.dim() != 1 or value.shape[0] != rows:
        raise ValueError(f"loss returned {tuple(value.shape)} for a batch of {rows}: a vector of one "
                         "value per sample, or a scalar")  # fmt: skip
    return value.mean(), float(value.detach().sum())


def planned_steps(rows: int, config: FitConfig) -> int:
    """Optimizer steps one round takes: ``local_steps`` batches, or ``local_epochs`` passes."""
    per_epoch = -(-rows // config.batch_size)
    return config.local_steps if config.local_steps is not None else config.local_epochs * per_epoch


def local_train(
    model: nn.Module,
    train_set: Dataset[Any],
    loss_fn: LossFn,
    config: FitConfig,
    device: torch.device,
    round_seed: int,
    correction: np.ndarray | None = None,
    params: list[nn.Parameter] | None = None,
) -> float:
    """The one local loop, for every task: ``planned_steps`` optimizer steps over shuffled
    batches of ``train_set``, in place; returns the mean training loss per sample. ``params``:
    what the optimizer steps (default: every parameter that takes gradients), flat in this order
    for ``correction`` (SCAFFOLD's c - c_i, added to every gradient). FedProx adds
    (mu/2)||w - w_global||^2 over ``params``."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad] if params is None else params
    anchor = [p.detach().clone() for p in params] if config.proximal_mu > 0 else []
    optimizer = _local_optimizer(params, config)
    offsets = _split_like(params, correction, device) if correction is not None else []
    generator = torch.Generator().manual_seed(round_seed)
    rows = len(train_set)  # type: ignore[arg-type]
    steps = planned_steps(rows, config)
    total, seen, taken = 0.0, 0, 0
    while taken < steps:
        for inputs, target in batches(train_set, config.batch_size, generator, device):
            optimizer.zero_grad()
            loss, loss_sum = mean_loss(loss_fn, model(inputs), target)
            if anchor:
                prox = sum(((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True))
                loss = loss + 0.5 * config.proximal_mu * prox
            loss.backward()
            for p, offset in zip(params, offsets, strict=False):
                if p.grad is not None:
                    p.grad.add_(offset)
            optimizer.step()
            total += loss_sum
            seen += len(target)
            taken += 1
            if taken >= steps:
                break
    return total / max(seen, 1)


def local_steps(rows: int, config: FitConfig) -> int:
    """Optimizer steps `local_train` takes: K in SCAFFOLD's control-variate update."""
    return planned_steps(rows, config)


def _split_like(params: list[nn.Parameter], flat: np.ndarray, device: torch.device) -> list[torch.Tensor]:
    out, start = [], 0
    for p in params:
        size = p.numel()
        chunk = torch.as_tensor(flat[start : start + size], dtype=p.dtype, device=device)
        out.append(chunk.view_as(p))
        start += size
    if start != flat.size:
        raise ValueError(f"correction holds {flat.size} values, the model {start}")
    return out


@torch.no_grad()
def outputs_of(model: nn.Module, data: Dataset[Any], device: torch.device) -> tuple[Any, torch.Tensor]:
    """The model's outputs and the targets over a whole split, in order (eval mode)."""
    model.eval()
    outs, targets = [], []
    for inputs, target in batches(data, EVAL_BATCH, None, device):
        outs.append(model(inputs))
        targets.append(target)
    if not outs:  # no rows: an empty batch still has the model's output shape
        inputs, target = _empty(data, device)
        return model(inputs), target
    return torch.cat(outs), torch.cat(targets)


def _empty(data: Dataset[Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(data, TensorDataset):
        return data.tensors[0][:0].to(device), data.tensors[-1][:0].to(device)
    raise ValueError("the validation split has no rows")


@torch.no_grad()
def evaluate(
    model: nn.Module, val_set: Dataset[Any], binary: bool, device: torch.device, silo: str
) -> Evaluation:
    """The built-in tables' scoring: the kind's metrics over the whole validation split."""
    logits, ys = outputs_of(model, val_set, device)
    return score_logits(logits, ys, binary, silo)


@torch.no_grad()
def score_logits(logits: torch.Tensor, ys: torch.Tensor, binary: bool, silo: str) -> Evaluation:
    """Loss sum, correct count and (binary) score histograms of ``logits`` against labels ``ys``."""
    sums = check_sums(defaults("binary" if binary else "multiclass")["metrics"](logits, ys), silo)
    count, loss_sum, correct = int(sums["count"]), sums["loss_sum"], int(sums["correct"])
    if not binary:
        return Evaluation(silo, count, loss_sum, correct, sums=sums)
    hists = (tuple(int(v) for v in sums["positive_hist"]), tuple(int(v) for v in sums["negative_hist"]))
    return Evaluation(silo, count, loss_sum, correct, *hists, sums=sums)

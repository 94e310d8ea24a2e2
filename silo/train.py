"""Local training and evaluation on one silo's rows (FedAvg; FedProx with mu > 0)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from silo.messages import Evaluation, FitConfig

AUC_BINS = 100


def _loss_fn(binary: bool) -> nn.Module:
    return nn.BCEWithLogitsLoss(reduction="sum") if binary else nn.CrossEntropyLoss(reduction="sum")


def _target(y: torch.Tensor, binary: bool) -> torch.Tensor:
    return y.float().unsqueeze(1) if binary else y


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


def local_train(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    config: FitConfig,
    binary: bool,
    device: torch.device,
    round_seed: int,
    correction: np.ndarray | None = None,
) -> float:
    """Train in place for ``config.local_epochs``; return the mean training loss.
    ``correction`` (SCAFFOLD's c - c_i, flat like the model's parameters) is added to every gradient."""
    model.train()
    xs = torch.from_numpy(x).to(device)
    ys = torch.from_numpy(y).to(device)
    loss_fn = _loss_fn(binary)
    params = list(model.parameters())
    anchor = [p.detach().clone() for p in params] if config.proximal_mu > 0 else []
    optimizer = _local_optimizer(params, config)
    offsets = _split_like(params, correction, device) if correction is not None else []
    generator = torch.Generator().manual_seed(round_seed)
    total, seen = 0.0, 0
    for _ in range(config.local_epochs):
        order = torch.randperm(len(xs), generator=generator).to(device)
        for start in range(0, len(xs), config.batch_size):
            batch = order[start : start + config.batch_size]
            optimizer.zero_grad()
            loss_sum = loss_fn(model(xs[batch]), _target(ys[batch], binary))
            loss = loss_sum / len(batch)
            if anchor:
                prox = sum(((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True))
                loss = loss + 0.5 * config.proximal_mu * prox
            loss.backward()
            for p, offset in zip(params, offsets, strict=False):
                if p.grad is not None:
                    p.grad.add_(offset)
            optimizer.step()
            total += float(loss_sum.detach())
            seen += len(batch)
    return total / max(seen, 1)


def local_steps(rows: int, config: FitConfig) -> int:
    """Optimizer steps `local_train` takes: K in SCAFFOLD's control-variate update."""
    return config.local_epochs * -(-rows // config.batch_size)


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
def evaluate(
    model: nn.Module, x: np.ndarray, y: np.ndarray, binary: bool, device: torch.device, silo: str
) -> Evaluation:
    model.eval()
    xs = torch.from_numpy(x).to(device)
    ys = torch.from_numpy(y).to(device)
    return score_logits(model(xs), ys, binary, silo)


@torch.no_grad()
def score_logits(logits: torch.Tensor, ys: torch.Tensor, binary: bool, silo: str) -> Evaluation:
    """Loss sum, correct count and (binary) score histograms of ``logits`` against labels ``ys``."""
    y = ys.cpu().numpy()
    loss = float(_loss_fn(binary)(logits, _target(ys, binary)))
    if not binary:
        correct = int((logits.argmax(dim=1) == ys).sum())
        return Evaluation(silo, len(y), loss, correct)
    prob = torch.sigmoid(logits[:, 0]).cpu().numpy()
    correct = int(((prob >= 0.5).astype(np.int64) == y).sum())
    bins = np.minimum((prob * AUC_BINS).astype(np.int64), AUC_BINS - 1)
    pos = np.bincount(bins[y == 1], minlength=AUC_BINS)
    neg = np.bincount(bins[y == 0], minlength=AUC_BINS)
    return Evaluation(silo, len(y), loss, correct, tuple(int(v) for v in pos), tuple(int(v) for v in neg))

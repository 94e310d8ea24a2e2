"""Record-level DP: local training with DP-SGD through Opacus (per-sample clipping, Gaussian
noise, Poisson sampling). The silo's own model stays a plain torch module: a copy is wrapped
in Opacus's GradSampleModule for the round and its weights copied back.

    pytest tests/silo/test_dp_train.py -q
"""

from __future__ import annotations

import copy
import logging
import warnings
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from privacy.dp import record_plan
from silo.messages import FitConfig
from silo.train import LossFn, make_optimizer

logger = logging.getLogger(__name__)


def dp_local_train(
    model: nn.Module,
    train_set: Dataset[Any],
    loss_fn: LossFn,
    config: FitConfig,
    device: torch.device,
    round_seed: int,
    noise_multiplier: float,
    max_grad_norm: float,
) -> tuple[float, float, int]:
    """Train ``model`` in place with DP-SGD; return (mean training loss, sample rate, steps).
    ``loss_fn`` must give one loss per sample (per-sample clipping needs them)."""
    from opacus import GradSampleModule
    from opacus.data_loader import DPDataLoader
    from opacus.optimizers import DPOptimizer

    generator = torch.Generator().manual_seed(round_seed)  # Poisson sampling, on the CPU
    # The noise is drawn where the gradients are (a CPU generator fails on a GPU), from a
    # stream of its own seeded by the sampling generator's first draw.
    noise_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    noise = torch.Generator(device=device).manual_seed(noise_seed)
    rows = len(train_set)  # type: ignore[arg-type]
    sample_rate, steps = record_plan(rows, config.batch_size, config.local_epochs, config.local_steps)
    plain = DataLoader(_on_cpu(train_set), batch_size=config.batch_size)
    loader = DPDataLoader.from_data_loader(plain, generator=generator)
    assert abs(loader.sample_rate - sample_rate) < 1e-12  # what the accountant is told
    work = copy.deepcopy(model).to(device)
    work.train()
    with warnings.catch_warnings():  # Opacus warns about secure_mode (a CSPRNG) being off
        warnings.simplefilter("ignore")
        wrapped = GradSampleModule(work)
        optimizer = DPOptimizer(
            make_optimizer([p for p in wrapped.parameters() if p.requires_grad], config),
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            # as Opacus's make_private: rows x sample rate (<= batch_size), the mean's divisor
            expected_batch_size=max(1, int(rows * sample_rate)),
            generator=noise,
        )
    total, seen, taken = 0.0, 0, 0
    while taken < steps:
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            optimizer.zero_grad()
            # An empty Poisson batch (possible, and part of the guarantee) gives a NaN loss
            # but empty per-sample gradients: Opacus's step is then noise only.
            losses = loss_fn(wrapped(xb), yb)
            if losses.dim() != 1:
                raise ValueError("record-level DP needs a loss with one value per sample, got a scalar")
            losses.mean().backward()
            if len(xb):
                total += float(losses.detach().sum())
                seen += len(xb)
            optimizer.step()
            taken += 1
            if taken >= steps:
                break
    wrapped._close()  # remove Opacus's hooks
    with torch.no_grad():
        for mine, trained in zip(model.parameters(), work.parameters(), strict=True):
            mine.copy_(trained)
    return total / max(seen, 1), sample_rate, taken


def _on_cpu(data: Dataset[Any]) -> Dataset[Any]:
    """Opacus's Poisson loader collates on the CPU; tables kept on a GPU are copied back once."""
    if isinstance(data, TensorDataset) and any(t.device.type != "cpu" for t in data.tensors):
        return TensorDataset(*(t.cpu() for t in data.tensors))
    return data

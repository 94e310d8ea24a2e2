"""DP-SGD with Opacus: the silo's model stays a plain torch module that learns and exports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from silo.config import ModelSpec
from silo.dp_train import dp_local_train
from silo.messages import FitConfig
from silo.models import build_model, get_flat
from silo.publish import export_program
from silo.task_kinds import binary_loss


def _data(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    return x, y


def _set(x: np.ndarray, y: np.ndarray) -> TensorDataset:
    return TensorDataset(torch.from_numpy(x), torch.from_numpy(y))


def test_dp_sgd_learns_and_leaves_a_plain_module(tmp_path: Path) -> None:
    x, y = _data(400, 0)
    model = build_model(ModelSpec("logistic"), 4, 1, seed=0)
    before = get_flat(model)
    config = FitConfig(local_epochs=3, batch_size=32, lr=0.5)

    loss, rate, steps = dp_local_train(
        model, _set(x, y), binary_loss, config, torch.device("cpu"), 1, 0.5, 1.0
    )

    assert rate == 1 / 13 and steps == 39
    assert np.isfinite(loss) and not np.allclose(get_flat(model), before)
    with torch.no_grad():
        accuracy = ((model(torch.from_numpy(x))[:, 0] > 0).numpy() == y).mean()
    assert accuracy > 0.85
    assert all(not hasattr(p, "grad_sample") for p in model.parameters())
    assert not model._forward_hooks and not model._backward_hooks
    export_program(model, 4, tmp_path / "model.pt2")  # what publishing needs


def test_more_noise_moves_the_model_more_at_random() -> None:
    x, y = _data(200, 1)
    config = FitConfig(local_epochs=1, batch_size=32, lr=0.1)
    drift = []
    for sigma in (0.1, 100.0):
        model = build_model(ModelSpec("logistic"), 4, 1, seed=0)
        start = get_flat(model)
        dp_local_train(model, _set(x, y), binary_loss, config, torch.device("cpu"), 2, sigma, 1.0)
        drift.append(float(np.linalg.norm(get_flat(model) - start)))
    assert drift[1] > 5 * drift[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; see benchmarks/gpu.py")
def test_dp_sgd_trains_a_model_on_a_cuda_device() -> None:
    """Opacus draws the noise on the gradients' device: a CPU generator failed there."""
    x, y = _data(400, 0)
    cuda = torch.device("cuda")
    model = build_model(ModelSpec("logistic"), 4, 1, seed=0).to(cuda)
    before = get_flat(model)
    config = FitConfig(local_epochs=3, batch_size=32, lr=0.5)

    loss, _, _ = dp_local_train(model, _set(x, y), binary_loss, config, cuda, 1, 0.5, 1.0)

    assert np.isfinite(loss) and not np.allclose(get_flat(model), before)
    assert all(p.device.type == "cuda" for p in model.parameters())
    with torch.no_grad():
        accuracy = ((model(torch.from_numpy(x).to(cuda))[:, 0] > 0).cpu().numpy() == y).mean()
    assert accuracy > 0.85

"""Model builders and the flat-vector view of a model's weights.

Built-in kinds are ``logistic`` (one linear layer) and ``mlp``; any other kind is
``"package.module:factory"`` and is called as ``factory(n_inputs, n_outputs)``.
"""

from __future__ import annotations

import importlib

import numpy as np
import torch
from torch import nn

from silo.config import ModelSpec


class ModelError(ValueError):
    """A model kind that cannot be built."""


def build_model(spec: ModelSpec, n_inputs: int, n_outputs: int, seed: int) -> nn.Module:
    """Build deterministically: every silo builds the same round-0 weights from ``seed``."""
    torch.manual_seed(seed)
    if spec.kind == "logistic":
        return nn.Linear(n_inputs, n_outputs)
    if spec.kind == "mlp":
        layers: list[nn.Module] = []
        width = n_inputs
        for hidden in spec.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, n_outputs))
        return nn.Sequential(*layers)
    module_name, _, attr = spec.kind.partition(":")
    if not attr:
        raise ModelError(f"model kind {spec.kind!r}: use logistic, mlp or 'package.module:factory'")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ModelError(f"model kind {spec.kind!r}: cannot import it: {err}") from err
    model = factory(n_inputs, n_outputs)
    if not isinstance(model, nn.Module):
        raise ModelError(f"model kind {spec.kind!r}: factory returned {type(model).__name__}, not nn.Module")
    return model


def _float_tensors(model: nn.Module) -> list[torch.Tensor]:
    return [t for t in model.state_dict().values() if t.is_floating_point()]


def count_parameters(model: nn.Module) -> int:
    return sum(t.numel() for t in _float_tensors(model))


def get_flat(model: nn.Module) -> np.ndarray:
    """Every floating-point tensor of the state dict (weights and buffers), as float64."""
    tensors = _float_tensors(model)
    if not tensors:
        return np.zeros(0)
    return torch.cat([t.detach().reshape(-1).double().cpu() for t in tensors]).numpy()


def set_flat(model: nn.Module, flat: np.ndarray) -> None:
    tensors = _float_tensors(model)
    expected = sum(t.numel() for t in tensors)
    if flat.size != expected:
        raise ModelError(f"weight vector has {flat.size} values, the model has {expected}")
    offset = 0
    with torch.no_grad():
        for t in tensors:
            chunk = torch.from_numpy(flat[offset : offset + t.numel()]).reshape(t.shape)
            t.copy_(chunk.to(dtype=t.dtype, device=t.device))
            offset += t.numel()

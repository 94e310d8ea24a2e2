"""Default loss, metrics and finalize for ``[task] kind`` = binary | multiclass | regression.

Metrics are additive sums over a silo's whole validation split (numbers or arrays, never rows);
``finalize`` turns summed sums (one silo's, or every silo's) into figures, NaN where the rows
leave a figure undefined (ROC AUC over one class, R² over a constant target, anything over no
rows): such a figure is reported as undefined, never as a number.

    python -c "import torch; from silo.task_kinds import defaults; d = defaults('regression'); \
print(d['finalize'](d['metrics'](torch.tensor([[1.], [2.]]), torch.tensor([[1.], [3.]]))))"
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from silo.sums import (
    AUC_BINS,
    add_sums,
    auc_from_histograms,
    classification_finalize,
    loss_finalize,
    regression_finalize,
    why_undefined,
)

__all__ = [
    "add_sums",
    "auc_from_histograms",
    "check_sums",
    "defaults",
    "loss_finalize",
    "loss_metrics",
    "why_undefined",
]

# -- binary: one logit per row, target 0/1 ---------------------------------------------------


def _rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` as (rows, values per row); a 1-d tensor is one value per row (works for 0 rows)."""
    return t.flatten(1) if t.dim() > 1 else t.reshape(-1, 1)


def _logit(outputs: torch.Tensor) -> torch.Tensor:
    rows = _rows(outputs)
    if rows.shape[1] != 1:
        raise ValueError(f"kind 'binary' takes one logit (and one 0/1 target) per row, got {rows.shape[1]}")
    return rows[:, 0]


def binary_loss(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(
        _logit(outputs), _logit(target).to(outputs.dtype), reduction="none"
    )


@torch.no_grad()
def binary_metrics(outputs: torch.Tensor, target: torch.Tensor) -> dict[str, Any]:
    y = _logit(target).detach().cpu().numpy().astype(np.int64)
    prob = torch.sigmoid(_logit(outputs)).detach().cpu().numpy()
    bins = np.minimum((prob * AUC_BINS).astype(np.int64), AUC_BINS - 1)
    return {
        "loss_sum": float(binary_loss(outputs, target).sum()),
        "count": int(len(y)),
        "correct": int(((prob >= 0.5).astype(np.int64) == y).sum()),
        "positive_hist": np.bincount(bins[y == 1], minlength=AUC_BINS),
        "negative_hist": np.bincount(bins[y == 0], minlength=AUC_BINS),
    }


# -- multiclass: one logit per class, target the class index ---------------------------------


def multiclass_loss(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs, target.reshape(-1).long(), reduction="none")


@torch.no_grad()
def multiclass_metrics(outputs: torch.Tensor, target: torch.Tensor) -> dict[str, Any]:
    classes = outputs.shape[1]
    y = target.reshape(-1).long()
    hit = outputs.argmax(dim=1) == y
    return {
        "loss_sum": float(multiclass_loss(outputs, target).sum()),
        "count": int(len(y)),
        "correct": int(hit.sum()),
        "class_count": torch.bincount(y, minlength=classes).cpu().numpy(),
        "class_correct": torch.bincount(y[hit], minlength=classes).cpu().numpy(),
    }


# -- regression: outputs and target of the same shape ----------------------------------------


def regression_loss(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    diff = _rows(outputs) - _rows(target).to(outputs.dtype)
    return (diff**2).mean(dim=1)


@torch.no_grad()
def regression_metrics(outputs: torch.Tensor, target: torch.Tensor) -> dict[str, Any]:
    out, y = _rows(outputs).double(), _rows(target).double()
    diff = out - y
    return {
        "count": int(y.numel()),
        "sse": float((diff**2).sum()),
        "sae": float(diff.abs().sum()),
        "sum_y": float(y.sum()),
        "sum_y2": float((y**2).sum()),
    }


KIND_HOOKS: dict[str, dict[str, Callable[..., Any]]] = {
    "binary": {"loss": binary_loss, "metrics": binary_metrics, "finalize": classification_finalize},
    "multiclass": {
        "loss": multiclass_loss,
        "metrics": multiclass_metrics,
        "finalize": classification_finalize,
    },
    "regression": {"loss": regression_loss, "metrics": regression_metrics, "finalize": regression_finalize},
}


def defaults(kind: str | None) -> dict[str, Callable[..., Any]]:
    """The hooks ``kind`` supplies (none without a kind)."""
    return dict(KIND_HOOKS.get(kind or "", {}))


def loss_metrics(loss: Callable[..., Any]) -> Callable[..., dict[str, Any]]:
    """metrics() for a task that has only a loss: its sum and the row count."""

    @torch.no_grad()
    def metrics(outputs: Any, target: torch.Tensor) -> dict[str, Any]:
        value = loss(outputs, target)
        total = float(value.sum()) if value.dim() else float(value) * len(target)
        return {"loss_sum": total, "count": int(len(target))}

    return metrics


def check_sums(value: Any, silo: str) -> dict[str, Any]:
    """What a task's ``metrics`` returned, as {name: float or float64 array}; anything else is
    refused, naming the silo (rows or predictions must never leave it)."""
    if not isinstance(value, Mapping):
        raise TypeError(f"silo {silo!r}: metrics() returned {type(value).__name__}, not a dict of sums")
    out: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, torch.Tensor):
            item = item.detach().cpu().numpy()
        if not isinstance(key, str) or not (np.isscalar(item) or isinstance(item, np.ndarray)):
            kind = type(item).__name__
            raise TypeError(
                f"silo {silo!r}: metrics() returned {key!r}: {kind}; use numbers or arrays of sums"
            )
        array = np.asarray(item)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"silo {silo!r}: metrics() returned {key!r} of dtype {array.dtype}, not a number")
        out[key] = float(array) if array.ndim == 0 else array.astype(np.float64)
    return out

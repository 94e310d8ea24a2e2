"""Figures from additive sums, in numpy alone (the orchestrator and driver never import torch).

A task's ``metrics`` returns sums over a silo's validation rows; ``finalize`` turns summed sums
(one silo's, or every silo's) into figures, NaN where the rows leave a figure undefined.

    python -c "from silo.sums import classification_finalize as f; \
print(f({'loss_sum': 3.0, 'count': 4, 'correct': 3}))"
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

AUC_BINS = 100
NAN = float("nan")
Sums = Mapping[str, Any]


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else NAN


def auc_from_histograms(positive: np.ndarray, negative: np.ndarray) -> float | None:
    """ROC AUC from binned scores: P(s+ > s-) + P(same bin) / 2; None with one class only."""
    n_pos, n_neg = positive.sum(), negative.sum()
    if n_pos == 0 or n_neg == 0:
        return None
    below = np.concatenate([[0], np.cumsum(negative)[:-1]])
    return float((positive * below).sum() + 0.5 * (positive * negative).sum()) / float(n_pos * n_neg)


def classification_finalize(sums: Sums) -> dict[str, float]:
    """Loss and accuracy; ROC AUC where score histograms were summed (binary); balanced accuracy
    where per-class counts were (multiclass). The built-in tables' figures too."""
    figures = {
        "loss": _ratio(sums["loss_sum"], sums["count"]),
        "accuracy": _ratio(sums["correct"], sums["count"]),
    }
    if "positive_hist" in sums and "negative_hist" in sums:
        auc = auc_from_histograms(np.asarray(sums["positive_hist"]), np.asarray(sums["negative_hist"]))
        figures["auc"] = NAN if auc is None else auc
    if "class_count" in sums and "class_correct" in sums:
        counts = np.asarray(sums["class_count"], dtype=np.float64)
        seen = counts > 0
        recall = np.asarray(sums["class_correct"], dtype=np.float64)[seen] / counts[seen]
        figures["balanced_accuracy"] = float(recall.mean()) if recall.size else NAN
    return figures


def regression_finalize(sums: Sums) -> dict[str, float]:
    n = float(sums["count"])
    total = float(sums["sum_y2"]) - float(sums["sum_y"]) ** 2 / n if n else 0.0
    # a constant target (total ~ 0 up to rounding) leaves R² undefined
    constant = total <= 1e-12 * max(float(sums["sum_y2"]), 1.0)
    mse = _ratio(sums["sse"], n)
    return {
        "loss": mse,
        "mse": mse,
        "mae": _ratio(sums["sae"], n),
        "r2": NAN if constant else 1.0 - float(sums["sse"]) / total,
    }


def loss_finalize(sums: Sums) -> dict[str, float]:
    return {"loss": _ratio(sums["loss_sum"], sums["count"])}


def why_undefined(figure: str, sums: Sums) -> str:
    """Why ``figure`` came out NaN over ``sums``' rows, in words for a table or a tag."""
    if sums.get("count", 1) == 0:
        return "no validation rows"
    if figure == "auc":
        return "a single class in its validation rows"
    if figure == "r2":
        return "a constant target in its validation rows"
    if figure == "balanced_accuracy":
        return "no class in its validation rows"
    return "undefined over its validation rows"


def add_sums(items: Sequence[tuple[str, Sums]]) -> dict[str, Any]:
    """Named sums added key by key (numbers, or arrays of one shape); a silo whose keys or shapes
    differ from the first's is named."""
    if not items:
        return {}
    first, reference = items[0]
    total: dict[str, Any] = {k: np.array(v, copy=True) if np.ndim(v) else v for k, v in reference.items()}
    for silo, sums in items[1:]:
        if set(sums) != set(reference):
            raise ValueError(
                f"silo {silo!r}: metrics {sorted(sums)} differ from silo {first!r}'s {sorted(reference)}"
            )
        for key, value in sums.items():
            if np.shape(value) != np.shape(total[key]):
                shapes = f"{np.shape(value)}, silo {first!r}'s {np.shape(total[key])}"
                raise ValueError(f"silo {silo!r}: metric {key!r} has shape {shapes}")
            total[key] = total[key] + value
    return total

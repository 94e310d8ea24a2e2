"""Combine per-silo evaluations into global metrics (weighted by validation rows)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from silo.messages import Evaluation


@dataclass(frozen=True)
class SiloScore:
    examples: int
    loss: float
    accuracy: float


@dataclass(frozen=True)
class GlobalEval:
    after_round: int  # the global model produced by this round (0: the initial model)
    examples: int
    loss: float
    accuracy: float
    auc: float | None
    per_silo: dict[str, SiloScore]


def auc_from_histograms(positive: np.ndarray, negative: np.ndarray) -> float | None:
    """ROC AUC from binned scores: P(s+ > s-) + P(same bin) / 2."""
    n_pos, n_neg = positive.sum(), negative.sum()
    if n_pos == 0 or n_neg == 0:
        return None
    below = np.concatenate([[0], np.cumsum(negative)[:-1]])
    return float((positive * below).sum() + 0.5 * (positive * negative).sum()) / float(n_pos * n_neg)


def combine(after_round: int, evaluations: Sequence[Evaluation]) -> GlobalEval:
    examples = sum(e.examples for e in evaluations)
    loss = sum(e.loss_sum for e in evaluations) / max(examples, 1)
    accuracy = sum(e.correct for e in evaluations) / max(examples, 1)
    auc = None
    hists = [(e.positive_hist, e.negative_hist) for e in evaluations]
    if evaluations and all(p is not None and n is not None for p, n in hists):
        positive = np.sum([np.asarray(p) for p, _ in hists], axis=0)
        negative = np.sum([np.asarray(n) for _, n in hists], axis=0)
        auc = auc_from_histograms(positive, negative)
    per_silo = {e.silo: SiloScore(e.examples, e.loss, e.accuracy) for e in evaluations}
    return GlobalEval(after_round, examples, loss, accuracy, auc, per_silo)

"""Global metrics from per-silo sums: accuracy weighted by rows, AUC from score histograms."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.metrics import auc_from_histograms, combine
from silo.messages import Evaluation


def _exact_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float(greater + 0.5 * ties) / (len(pos) * len(neg))


@given(
    st.lists(st.integers(0, 99), min_size=1, max_size=40),
    st.lists(st.integers(0, 99), min_size=1, max_size=40),
)
def test_histogram_auc_equals_exact_auc_on_binned_scores(pos: list[int], neg: list[int]) -> None:
    positive = np.bincount(pos, minlength=100)
    negative = np.bincount(neg, minlength=100)
    assert auc_from_histograms(positive, negative) == _exact_auc(np.array(pos), np.array(neg))


def test_auc_needs_both_classes() -> None:
    assert auc_from_histograms(np.ones(3), np.zeros(3)) is None


def test_combine_weights_by_validation_rows() -> None:
    result = combine(
        4,
        [
            Evaluation("a", examples=10, loss_sum=5.0, correct=9),
            Evaluation("b", examples=30, loss_sum=3.0, correct=15),
        ],
    )
    assert result.after_round == 4
    assert result.accuracy == 24 / 40
    assert result.loss == 8.0 / 40
    assert result.per_silo["a"].accuracy == 0.9 and result.per_silo["b"].loss == 0.1
    assert result.auc is None

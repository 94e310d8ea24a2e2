"""Figures from per-silo sums: accuracy weighted by rows, AUC from score histograms; a figure a
silo's rows leave undefined is NaN, named, and kept out of the global figures."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.metrics import add, auc_from_histograms, combine, figures
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


def _hist(bins: dict[int, int]) -> tuple[int, ...]:
    return tuple(bins.get(i, 0) for i in range(100))


def test_a_single_class_silo_has_an_undefined_auc_and_a_defined_accuracy() -> None:
    mixed = Evaluation("mixed", 4, 2.0, 3, _hist({90: 2}), _hist({10: 1, 95: 1}))
    positive_only = Evaluation("positive-only", 6, 1.5, 5, _hist({80: 5, 30: 1}), _hist({}))
    result = combine(3, [mixed, positive_only])
    silo = result.per_silo["positive-only"]
    assert math.isnan(silo.metrics["auc"]) and silo.accuracy == 5 / 6 and silo.loss == 0.25
    assert silo.undefined == {"auc": "a single class in its validation rows"}
    assert result.per_silo["mixed"].undefined == {} and result.per_silo["mixed"].auc == 0.5
    # the global AUC is the summed histograms' AUC, not a mean of per-silo figures
    assert result.auc == auc_from_histograms(
        np.add(mixed.positive_hist, positive_only.positive_hist),
        np.add(mixed.negative_hist, positive_only.negative_hist),
    )
    assert result.accuracy == 8 / 10 and result.metrics["auc"] == result.auc
    assert result.mean_of_silos("auc") == 0.5  # the undefined one is left out, never NaN


def test_a_silo_without_validation_rows_has_every_figure_undefined() -> None:
    empty = Evaluation("tiny", 0, 0.0, 0, _hist({}), _hist({}))
    other = Evaluation("b", 10, 5.0, 7, _hist({70: 5}), _hist({20: 5}))
    result = combine(1, [empty, other])
    tiny = result.per_silo["tiny"]
    assert all(math.isnan(v) for v in tiny.metrics.values())
    assert set(tiny.undefined) == {"loss", "accuracy", "auc"}
    assert result.examples == 10 and result.accuracy == 0.7 and result.loss == 0.5 and result.auc == 1.0
    assert result.mean_of_silos("accuracy") == 0.7


def test_an_auc_undefined_over_every_silo_is_none_globally_and_nan_in_the_figures() -> None:
    result = combine(1, [Evaluation("a", 2, 1.0, 1, _hist({60: 2}), _hist({}))])
    assert result.auc is None and math.isnan(result.metrics["auc"])
    assert result.mean_of_silos("auc") is None


def test_multiclass_figures_have_no_auc() -> None:
    result = combine(1, [Evaluation("a", 5, 1.0, 4)])
    assert "auc" not in result.metrics and result.per_silo["a"].undefined == {}


evaluations = st.lists(
    st.tuples(
        st.floats(0, 100),
        st.lists(st.integers(0, 99), max_size=20),
        st.lists(st.integers(0, 99), max_size=20),
    ),
    min_size=1,
    max_size=6,
)


def _counts(scores: list[int]) -> tuple[int, ...]:
    return tuple(np.bincount(scores, minlength=100).tolist())


@given(evaluations)
def test_global_figures_are_the_figures_of_the_added_sums(silos: list) -> None:
    evals = [
        Evaluation(f"s{i}", len(p) + len(q), loss if p or q else 0.0, len(p), _counts(p), _counts(q))
        for i, (loss, p, q) in enumerate(silos)
    ]
    result, total = combine(1, evals), figures(add(evals))
    assert result.examples == total.examples == sum(e.examples for e in evals)
    if result.examples:
        for name in ("loss", "accuracy", "auc"):
            mine, theirs = result.metrics[name], total.metrics[name]
            assert (math.isnan(mine) and math.isnan(theirs)) or mine == theirs
    for e in evals:  # each silo alone is the same maths on its own sums
        if e.examples:
            assert figures(e).undefined == result.per_silo[e.silo].undefined
        else:
            assert set(result.per_silo[e.silo].undefined.values()) <= {"no validation rows"}

"""The gate's rule: not worse in aggregate, no silo worse by more than the margin, every silo scored."""

from __future__ import annotations

import pytest

from pipelines.gate import GateRecord, compare, decide, to_tags
from silo.messages import Evaluation


def _eval(silo: str, correct: int, examples: int = 100, loss_sum: float = 50.0) -> Evaluation:
    return Evaluation(silo, examples, loss_sum, correct)


def test_an_equal_or_better_challenger_passes() -> None:
    scores = {"a": (_eval("a", 80), _eval("a", 80)), "b": (_eval("b", 71), _eval("b", 70))}
    result = compare("m", ("3", "2"), scores, "accuracy", 0.02)
    assert result.decision().passed and result.aggregate_delta == pytest.approx(0.005)


def test_one_silo_worse_than_the_margin_fails_although_the_aggregate_is_better() -> None:
    scores = {"a": (_eval("a", 95), _eval("a", 80)), "b": (_eval("b", 67), _eval("b", 70))}
    result = compare("m", ("3", "2"), scores, "accuracy", 0.02)
    assert result.aggregate_delta is not None and result.aggregate_delta > 0
    decision = result.decision()
    assert not decision.passed and decision.reasons == ("silo b: worse by 0.0300, more than the margin 0.02",)
    assert result.decision(margin=0.05).passed  # promote --margin re-decides


def test_loss_is_better_when_lower_and_a_silo_without_scores_fails() -> None:
    scores = {"a": (_eval("a", 80, loss_sum=40.0), _eval("a", 80, loss_sum=50.0)), "b": "no answer in time"}
    result = compare("m", ("3", "2"), scores, "loss", 0.02)
    assert result.aggregate_delta is not None and abs(result.aggregate_delta - 0.1) < 1e-12
    assert result.decision().reasons == ("silo b: did not score the models",)


def test_the_gate_survives_the_round_trip_through_version_tags() -> None:
    scores = {"a": (_eval("a", 60), _eval("a", 80))}
    result = compare("m", ("3", "2"), scores, "accuracy", 0.02)
    record = GateRecord.from_tags(to_tags(result, "run1", "2026-01-01T00:00:00+00:00"))
    assert record is not None and record.against_version == "2" and not record.passed
    assert record.decision() == result.decision() and record.run_id == "run1"
    assert decide(0.0, {}, [], 0.02).passed and GateRecord.from_tags({}) is None


def _binary(silo: str, correct: int, pos: dict[int, int], neg: dict[int, int]) -> Evaluation:
    hist = lambda bins: tuple(bins.get(i, 0) for i in range(100))  # noqa: E731
    n = sum(pos.values()) + sum(neg.values())
    return Evaluation(silo, n, 0.5 * n, correct, hist(pos), hist(neg))


def test_a_silo_whose_metric_is_undefined_neither_passes_nor_fails_its_margin() -> None:
    # "ref" holds one class: its AUC is undefined for both models, whatever they score
    one_class = (_binary("ref", 2, {30: 10}, {}), _binary("ref", 9, {80: 10}, {}))
    good = (_binary("a", 9, {90: 5}, {10: 5}), _binary("a", 9, {90: 5}, {10: 5}))
    result = compare("m", ("3", "2"), {"ref": one_class, "a": good}, "auc", 0.02)
    decision = result.decision()
    assert decision.passed and result.undefined == {"ref": "a single class in its validation rows"}
    assert decision.notes == (
        "silo ref: metric undefined (a single class in its validation rows): neither passes nor fails "
        "its margin",
    )
    # ... and the others still decide: a worse silo beside it fails the gate
    worse = (_binary("a", 9, {40: 5}, {60: 5}), _binary("a", 9, {90: 5}, {10: 5}))
    failed = compare("m", ("3", "2"), {"ref": one_class, "a": worse}, "auc", 0.02).decision()
    assert not failed.passed and failed.reasons[-1].startswith("silo a: worse by 1.0000")
    assert len(failed.notes) == 1
    # on accuracy the same silo is defined and checked
    on_accuracy = compare("m", ("3", "2"), {"ref": one_class, "a": good}, "accuracy", 0.02)
    assert not on_accuracy.decision().passed and on_accuracy.undefined == {}
    record = GateRecord.from_tags(to_tags(result, "run2", "2026-12-01T00:00:00+00:00"))
    assert record is not None and record.decision() == decision and record.undefined == result.undefined


def test_a_metric_that_cannot_be_computed_for_one_model_fails() -> None:
    diverged = Evaluation("a", 10, float("nan"), 5)
    result = compare("m", ("3", "2"), {"a": (diverged, _eval("a", 5, 10))}, "loss", 0.02)
    assert not result.decision().passed and result.decision().reasons == (
        "the aggregate metric could not be computed",
        "silo a: the metric could not be computed for one of the models",
    )

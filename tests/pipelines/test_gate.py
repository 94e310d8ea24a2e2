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

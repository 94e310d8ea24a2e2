"""Robust aggregation maths on known inputs, and `RobustSum` as the orchestrator drives it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from orchestrator.robust import RobustSum, combine, krum, krum_scores, median, multi_krum, trimmed_mean
from privacy.aggregate import encode_weighted
from privacy.codec import CodecError, PlainCodec

HONEST = np.array([[1.0, 2.0], [1.2, 1.8], [0.8, 2.2], [1.1, 2.1]])
ATTACKED = np.vstack([HONEST[:3], [[100.0, -100.0]]])


def test_median_and_trimmed_mean_of_known_rows() -> None:
    rows = np.array([[0.0, 10.0], [1.0, 20.0], [2.0, 30.0], [100.0, -1000.0]])
    assert median(rows).tolist() == [1.5, 15.0]
    assert trimmed_mean(rows, 0.25).tolist() == [1.5, 15.0]  # drops one at each end of 4
    assert trimmed_mean(rows, 0.0).tolist() == pytest.approx(rows.mean(axis=0).tolist())
    with pytest.raises(ValueError, match="leaves nothing"):
        trimmed_mean(rows[:2], 0.5)


def test_krum_scores_by_hand_and_picks_an_honest_update() -> None:
    rows = np.array([[0.0], [1.0], [3.0], [10.0]])
    # f = 0, n = 4: each row's 2 nearest others. 0:{1,3}->1+9; 1:{0,2}->1+4; 2:{1,0}->4+9; 10:{3,1}->49+81
    assert krum_scores(rows, 0).tolist() == [10.0, 5.0, 13.0, 130.0]
    assert krum(rows, 0).tolist() == [1.0]
    chosen = krum(ATTACKED, 0)
    assert any(np.array_equal(chosen, row) for row in HONEST[:3])


def test_multi_krum_averages_the_best_scored_with_their_weights() -> None:
    weights = np.array([1.0, 1.0, 2.0, 1.0])
    result = multi_krum(ATTACKED, weights, byzantine=0, m=3)
    expected = (HONEST[0] + HONEST[1] + 2 * HONEST[2]) / 4
    assert result == pytest.approx(expected)
    assert combine("multi_krum", ATTACKED, weights, byzantine=1) == pytest.approx(expected)  # m = n - f


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float64, (5, 3), elements=st.floats(-1e3, 1e3)),
    arrays(np.float64, 3, elements=st.floats(-1e3, 1e3)),
)
def test_rules_are_translation_invariant_so_weights_equal_deltas(rows: np.ndarray, shift: np.ndarray) -> None:
    weights = np.arange(1.0, 6.0)
    for rule in ("median", "trimmed_mean", "multi_krum"):
        moved = combine(rule, rows + shift, weights, trim_fraction=0.2, byzantine=1)
        assert moved - shift == pytest.approx(
            combine(rule, rows, weights, trim_fraction=0.2, byzantine=1), abs=1e-6
        )


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, (5, 2), elements=st.floats(-10, 10)), st.floats(1e3, 1e6))
def test_one_outlier_of_five_cannot_move_median_outside_the_honest_range(
    rows: np.ndarray, scale: float
) -> None:
    attacked = rows.copy()
    attacked[0] = scale
    honest = rows[1:]
    for rule in ("median", "trimmed_mean"):
        result = combine(rule, attacked, np.ones(5), trim_fraction=0.2)
        assert np.all(result <= honest.max(axis=0) + 1e-9) and np.all(result >= honest.min(axis=0) - 1e-9)


def _item(codec: PlainCodec, values: list[float], weight: float, tag: str):
    return encode_weighted(codec, values, weight, tag=tag)


def test_robust_sum_rejects_non_finite_updates_and_clips_around_the_reference() -> None:
    codec = PlainCodec()
    running = RobustSum(codec, "mean", reference=np.zeros(2), clip_norm=1.0)
    with pytest.raises(CodecError, match="NaN or infinite"):
        running.add(_item(codec, [np.nan, 1.0], 2.0, "a"))
    running.add(_item(codec, [30.0, 40.0], 2.0, "b"))  # norm 50: scaled to norm 1
    running.add(_item(codec, [0.0, 0.5], 2.0, "c"))
    assert running.count == 2 and running.clipped == 1
    assert codec.decode(running.mean()) == pytest.approx([0.3, 0.65])


def test_robust_sum_median_ignores_a_scaled_update() -> None:
    codec = PlainCodec()
    running = RobustSum(codec, "median")
    for i, row in enumerate(ATTACKED):
        running.add(_item(codec, list(row), 10.0 + i, f"t{i}"))
    assert codec.decode(running.mean()) == pytest.approx(np.median(ATTACKED, axis=0))


def test_robust_sum_refuses_an_encrypted_codec() -> None:
    class Hidden(PlainCodec):
        name = "packed"

    with pytest.raises(ValueError, match="hides them"):
        RobustSum(Hidden(), "median")

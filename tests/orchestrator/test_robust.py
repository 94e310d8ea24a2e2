"""Robust aggregation maths on known inputs, and `RobustSum` as the orchestrator drives it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from orchestrator.robust import (
    RobustSum,
    combine,
    geometric_median,
    krum,
    krum_scores,
    median,
    multi_krum,
    trimmed_mean,
)
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


def test_weighted_median_by_hand() -> None:
    rows = np.array([[0.0, 10.0], [1.0, 20.0], [2.0, 30.0], [3.0, -5.0]])
    assert median(rows, np.array([1.0, 1.0, 1.0, 10.0])).tolist() == [3.0, -5.0]  # the heavy silo
    assert median(rows, np.array([1.0, 10.0, 1.0, 1.0])).tolist() == [1.0, 20.0]
    assert median(rows, np.ones(4)).tolist() == [1.5, 15.0] == median(rows).tolist()  # ordinary median
    # weights 1, 1, 2 over 0, 1, 5: the cumulative weight lands exactly on half (2) at 1 -> mean of 1 and 5
    assert median(np.array([[0.0], [1.0], [5.0]]), np.array([1.0, 1.0, 2.0])).tolist() == [3.0]
    with pytest.raises(ValueError, match="non-negative weights"):
        median(rows, np.array([1.0, -1.0, 1.0, 1.0]))


def test_weighted_trimmed_mean_trims_by_count_then_weights_the_rest() -> None:
    rows = np.array([[0.0], [1.0], [2.0], [100.0]])
    assert trimmed_mean(rows, 0.25, np.array([1.0, 1.0, 3.0, 1.0])).tolist() == [1.75]  # (1 + 3 * 2) / 4
    # the outlier claims almost all the weight and is still cut: the trim counts silos, not weight
    assert trimmed_mean(rows, 0.25, np.array([1.0, 1.0, 1.0, 1e6])).tolist() == [1.5]
    assert trimmed_mean(rows, 0.25, np.ones(4)).tolist() == trimmed_mean(rows, 0.25).tolist()


def test_combine_weights_median_and_trimmed_mean_unless_uniform() -> None:
    rows = np.array([[0.0], [1.0], [2.0], [3.0]])
    heavy = np.array([1.0, 1.0, 1.0, 10.0])
    assert combine("median", rows, heavy).tolist() == [3.0]
    assert combine("median", rows, heavy, robust_weighting="uniform").tolist() == [1.5]
    assert combine("trimmed_mean", rows, np.array([1.0, 3.0, 1.0, 1.0])).tolist() == [1.25]
    assert combine("trimmed_mean", rows, heavy, robust_weighting="uniform").tolist() == [1.5]
    with pytest.raises(ValueError, match="robust_weighting"):
        combine("median", rows, heavy, robust_weighting="rows")


_ROWS = arrays(np.float64, st.tuples(st.integers(1, 7), st.integers(1, 4)), elements=st.floats(-1e3, 1e3))


@settings(max_examples=60, deadline=None)
@given(_ROWS, st.data())
def test_weighted_rules_stay_within_the_per_coordinate_range(rows: np.ndarray, data: st.DataObject) -> None:
    n = len(rows)
    weights = np.array(data.draw(st.lists(st.floats(0.01, 1e3), min_size=n, max_size=n)))
    low, high = rows.min(axis=0) - 1e-9, rows.max(axis=0) + 1e-9
    fraction = data.draw(st.floats(0.0, 0.49))
    results = [median(rows, weights)]
    if 2 * int(np.floor(fraction * n)) < n:
        results.append(trimmed_mean(rows, fraction, weights))
    for result in results:
        assert np.all(result >= low) and np.all(result <= high)


@settings(max_examples=60, deadline=None)
@given(_ROWS, st.data())
def test_a_silo_with_more_than_half_the_weight_decides_the_weighted_median(
    rows: np.ndarray, data: st.DataObject
) -> None:
    n = len(rows)
    others = np.array(data.draw(st.lists(st.floats(0.0, 1e3), min_size=n, max_size=n)))
    heavy = data.draw(st.integers(0, n - 1))
    others[heavy] = 0.0
    weights = others.copy()
    weights[heavy] = others.sum() * data.draw(st.floats(1.01, 100.0)) + 1e-3  # > half of the total
    assert median(rows, weights).tolist() == rows[heavy].tolist()


@settings(max_examples=60, deadline=None)
@given(_ROWS, st.floats(0.01, 1e3))
def test_equal_weights_give_the_ordinary_median_and_trimmed_mean(rows: np.ndarray, weight: float) -> None:
    n = len(rows)
    weights = np.full(n, weight)
    assert median(rows, weights) == pytest.approx(np.median(rows, axis=0), abs=1e-9)
    cut = max(n // 4, 1) if n >= 3 else 0  # at least one from each end once three are left
    expected = np.sort(rows, axis=0)[cut : n - cut].mean(axis=0)
    assert trimmed_mean(rows, 0.25, weights) == pytest.approx(expected, abs=1e-9)


def test_a_round_with_fewer_answers_still_trims_one_from_each_end() -> None:
    # Planned for four silos (0.25: one cut), three answered: floor(0.75) = 0, but one is cut.
    rows = np.array([[0.0], [1.0], [100.0]])
    assert trimmed_mean(rows, 0.25) == pytest.approx([1.0])
    assert trimmed_mean(rows[:2], 0.25) == pytest.approx([0.5])  # two: nothing can be cut


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


# Multiples of 1/8: shifting them is exact, so rounding cannot merge two values into a tie (which
# silo of a tie is trimmed matters once the silos have different weights).
_EXACT = st.integers(-8000, 8000).map(lambda v: v / 8)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, (5, 3), elements=_EXACT), arrays(np.float64, 3, elements=_EXACT))
def test_rules_are_translation_invariant_so_weights_equal_deltas(rows: np.ndarray, shift: np.ndarray) -> None:
    weights = np.arange(1.0, 6.0)
    for rule in ("median", "trimmed_mean", "multi_krum", "geometric_median"):
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


def test_geometric_median_by_hand() -> None:
    # On a line it is the weighted median; weights 1, 1, 3 put it on the heavy point.
    line = np.array([[0.0], [1.0], [10.0]])
    assert geometric_median(line, np.ones(3)) == pytest.approx([1.0], abs=1e-4)
    assert geometric_median(line, np.array([1.0, 1.0, 3.0])) == pytest.approx([10.0], abs=1e-4)
    # Three vertices of an equilateral triangle: the centre (all angles below 120 degrees).
    triangle = np.array([[0.0, 0.0], [2.0, 0.0], [1.0, np.sqrt(3.0)]])
    assert geometric_median(triangle, np.ones(3)) == pytest.approx([1.0, 1.0 / np.sqrt(3.0)], abs=1e-6)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, (4, 3), elements=st.floats(-10, 10)), st.floats(1e3, 1e7))
def test_one_outlier_of_five_moves_the_geometric_median_a_bounded_distance(
    honest: np.ndarray, scale: float
) -> None:
    # With a weight share a < 1/2 of outliers, ||z - c|| <= (2 (1 - a) / (1 - 2 a)) max_k ||h_k - c||
    # for the honest centroid c (here a = 1/5: a factor 8/3), however far the outlier is sent.
    attacked = np.vstack([honest, np.full((1, 3), -scale)])
    centre = honest.mean(axis=0)
    spread = np.linalg.norm(honest - centre, axis=1).max()
    z = geometric_median(attacked, np.ones(5))
    assert np.linalg.norm(z - centre) <= 8.0 / 3.0 * spread + 1e-3


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


def test_robust_sum_clips_scaffolds_model_half_and_leaves_its_control_variate() -> None:
    codec = PlainCodec()
    running = RobustSum(codec, "mean", reference=np.zeros(3), clip_norm=1.0)  # a 3-parameter model

    running.add(_item(codec, [100.0, 0.0, 0.0, 5.0, 5.0, 5.0], 1.0, "round-1/a"))  # [w ; c + dc]

    assert running.clipped == 1
    assert codec.decode(running.mean()) == pytest.approx([1.0, 0.0, 0.0, 5.0, 5.0, 5.0])


def test_robust_sum_median_ignores_a_scaled_update() -> None:
    codec = PlainCodec()
    weighted, uniform = RobustSum(codec, "median"), RobustSum(codec, "median", robust_weighting="uniform")
    for i, row in enumerate(ATTACKED):
        weighted.add(_item(codec, list(row), 10.0 + i, f"t{i}"))
        uniform.add(_item(codec, list(row), 10.0 + i, f"u{i}"))
    # weights 10, 11, 12, 13 (half: 23). Column 0 sorted 0.8 (12), 1.0 (10), 1.2 (11), 100 (13):
    # cumulative 12, 22, 33 -> 1.2. Column 1 sorted -100 (13), 1.8 (11), ...: cumulative 13, 24 -> 1.8.
    assert codec.decode(weighted.mean()) == pytest.approx([1.2, 1.8])
    assert codec.decode(uniform.mean()) == pytest.approx(np.median(ATTACKED, axis=0))


def test_robust_sum_refuses_an_encrypted_codec() -> None:
    class Hidden(PlainCodec):
        name = "packed"

    with pytest.raises(ValueError, match="hides them"):
        RobustSum(Hidden(), "median")

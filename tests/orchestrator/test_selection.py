"""Silo sampling: Flower's sample size, a seeded draw that differs by round and repeats on resume."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.selection import sample_size, select

SILOS = ["cleveland", "hungary", "switzerland", "long-beach"]


@pytest.mark.parametrize(
    ("available", "fraction", "min_silos", "expected"),
    [(4, 1.0, 3, 4), (4, 0.75, 3, 3), (4, 0.5, 3, 3), (4, 0.5, 1, 2), (10, 0.35, 2, 3), (2, 0.5, 3, 2)],
)
def test_sample_size_is_flowers_rule(available: int, fraction: float, min_silos: int, expected: int) -> None:
    assert sample_size(available, fraction, min_silos) == expected


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_a_fraction_outside_zero_one_is_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match="fraction must be in"):
        sample_size(4, fraction, 1)


def test_fraction_one_asks_every_silo_in_order() -> None:
    assert select(SILOS, 1.0, 3, seed=0, server_round=1) == SILOS


def test_the_draw_repeats_for_the_same_round_and_changes_across_rounds() -> None:
    draws = [select(SILOS, 0.5, 2, seed=7, server_round=r) for r in range(1, 21)]

    assert draws[0] == select(SILOS, 0.5, 2, seed=7, server_round=1)  # a resumed run draws the same
    assert len({tuple(d) for d in draws}) > 1
    retried = [select(SILOS, 0.5, 2, seed=7, server_round=r, attempt=2) for r in range(1, 21)]
    assert retried != draws  # a retried round draws again


@given(
    names=st.lists(st.text("abcdefgh", min_size=1, max_size=4), min_size=1, max_size=12, unique=True),
    fraction=st.floats(0.01, 1.0),
    min_silos=st.integers(1, 12),
    seed=st.integers(0, 2**31),
    server_round=st.integers(1, 1000),
)
def test_a_draw_is_a_subset_in_order_of_at_least_min_silos(
    names: list[str], fraction: float, min_silos: int, seed: int, server_round: int
) -> None:
    chosen = select(names, fraction, min_silos, seed, server_round)

    assert len(chosen) == sample_size(len(names), fraction, min_silos) >= min(min_silos, len(names))
    assert chosen == [n for n in names if n in set(chosen)]

"""Shamir sharing: any t of n shares rebuild every secret; fewer are refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy.shamir import PRIME, ShareError, combine, from_bytes, split, to_bytes


@settings(max_examples=60, deadline=None)
@given(
    secrets=st.lists(st.integers(min_value=0, max_value=2**256 - 1), min_size=1, max_size=4),
    n=st.integers(min_value=2, max_value=9),
    data=st.data(),
)
def test_any_threshold_subset_rebuilds_the_secrets(secrets: list[int], n: int, data: st.DataObject) -> None:
    # Prepare: a t-of-n sharing and a random subset of t (or more) share holders
    t = data.draw(st.integers(min_value=1, max_value=n))
    shares = split(secrets, t, list(range(1, n + 1)))
    holders = data.draw(st.lists(st.sampled_from(sorted(shares)), min_size=t, unique=True))
    # Execute
    rebuilt = combine({x: shares[x] for x in holders}, t)
    # Assert
    assert rebuilt == secrets


def test_fewer_than_threshold_shares_are_refused() -> None:
    shares = split([123], 3, [1, 2, 3, 4])
    with pytest.raises(ShareError, match="2 shares cannot rebuild"):
        combine({1: shares[1], 2: shares[2]}, 3)


def test_t_minus_one_shares_fit_any_secret() -> None:
    # With t-1 shares fixed, every candidate secret has a polynomial through them: a share set
    # of two from a 3-of-n split, completed by a forged third point, "rebuilds" whatever we like.
    shares = split([5], 3, [1, 2, 3])
    for wanted in (0, 5, 2**200):
        # the third share that makes the secret `wanted`: solve the Lagrange sum for it
        l1, l2, l3 = _lagrange_at_zero([1, 2, 3])
        forged = (wanted - l1 * shares[1][0] - l2 * shares[2][0]) * pow(l3, -1, PRIME) % PRIME
        assert combine({1: shares[1], 2: shares[2], 3: [forged]}, 3) == [wanted]


def _lagrange_at_zero(points: list[int]) -> list[int]:
    out = []
    for x in points:
        num, den = 1, 1
        for o in points:
            if o != x:
                num, den = num * o % PRIME, den * (o - x) % PRIME
        out.append(num * pow(den, -1, PRIME) % PRIME)
    return out


def test_bytes_round_trip_and_malformed_bytes_are_named() -> None:
    values = [0, 1, PRIME - 1]
    assert from_bytes(to_bytes(values)) == values
    with pytest.raises(ShareError, match="whole number"):
        from_bytes(b"\x00" * 65)
    with pytest.raises(ShareError, match="not a field element"):
        from_bytes((PRIME).to_bytes(66, "big"))


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ShareError, match="threshold"):
        split([1], 4, [1, 2, 3])
    with pytest.raises(ShareError, match="distinct"):
        split([1], 2, [1, 1, 2])

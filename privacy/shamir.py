"""Shamir secret sharing over the prime field GF(2^521 - 1): t of n shares rebuild a secret,
fewer say nothing about it.

Secrets are integers below 2^512 (a 32-byte seed fits with room); every secret of a vector
gets its own random polynomial of degree t - 1, evaluated at the recipients' points 1..n.

    python -c "from privacy.shamir import split, combine; s = split([42, 7], 2, [1, 2, 3]); \
print(combine({1: s[1], 3: s[3]}, 2))"   # [42, 7]
"""

from __future__ import annotations

import secrets as _random
from collections.abc import Mapping, Sequence

PRIME = 2**521 - 1  # a Mersenne prime: every 64-byte secret fits
ELEMENT_BYTES = 66  # ceil(521 / 8)


class ShareError(ValueError):
    """Shares that cannot rebuild a secret (too few, bad points, malformed bytes)."""


def split(secrets: Sequence[int], threshold: int, points: Sequence[int]) -> dict[int, list[int]]:
    """{point: [share of each secret]}: any ``threshold`` of the points rebuild every secret."""
    if not 1 <= threshold <= len(points):
        raise ShareError(f"threshold {threshold} must be between 1 and the {len(points)} recipients")
    if len(set(points)) != len(points) or any(not 0 < x < PRIME for x in points):
        raise ShareError(f"share points {list(points)} must be distinct and non-zero")
    if any(not 0 <= s < 2**512 for s in secrets):
        raise ShareError("a secret is out of range (0 <= secret < 2^512)")
    shares: dict[int, list[int]] = {x: [] for x in points}
    for secret in secrets:
        coefficients = [secret] + [_random.randbelow(PRIME) for _ in range(threshold - 1)]
        for x in points:
            value = 0
            for c in reversed(coefficients):  # Horner
                value = (value * x + c) % PRIME
            shares[x].append(value)
    return shares


def combine(shares: Mapping[int, Sequence[int]], threshold: int) -> list[int]:
    """The secrets from ``threshold`` shares (Lagrange interpolation at 0); extra shares are ignored."""
    if len(shares) < threshold:
        raise ShareError(f"{len(shares)} shares cannot rebuild a secret shared {threshold}-of-n")
    points = sorted(shares)[:threshold]
    lengths = {len(shares[x]) for x in points}
    if len(lengths) != 1:
        raise ShareError("shares hold different numbers of secrets")
    weights = []
    for x in points:
        numerator, denominator = 1, 1
        for other in points:
            if other != x:
                numerator = numerator * other % PRIME
                denominator = denominator * (other - x) % PRIME
        weights.append(numerator * pow(denominator, -1, PRIME) % PRIME)
    return [
        sum(w * shares[x][i] for w, x in zip(weights, points, strict=True)) % PRIME
        for i in range(lengths.pop())
    ]


def to_bytes(values: Sequence[int]) -> bytes:
    return b"".join(v.to_bytes(ELEMENT_BYTES, "big") for v in values)


def from_bytes(data: bytes) -> list[int]:
    if len(data) % ELEMENT_BYTES:
        raise ShareError(f"{len(data)} bytes is not a whole number of {ELEMENT_BYTES}-byte shares")
    values = [int.from_bytes(data[i : i + ELEMENT_BYTES], "big") for i in range(0, len(data), ELEMENT_BYTES)]
    if any(v >= PRIME for v in values):
        raise ShareError("a share is not a field element")
    return values

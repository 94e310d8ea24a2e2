"""Robust aggregation in plaintext mode (``privacy.he = "off"``): rules that must see single updates.

Free functions for the maths, on the silos' models w_k (rows of a matrix): coordinate-wise
median, trimmed mean, Krum / multi-Krum (Blanchard et al. 2017). All are translation
invariant, so working on weights equals working on deltas w_k - w_global. `RobustSum` has
the interface of `privacy.aggregate.WeightedSum` (``add``, ``mean``) so the orchestrator
drives both alike; it also rejects non-finite updates and, with ``clip_norm``, bounds
||w_k - w_global|| (privacy.clipping.clip_to_norm). Plain "mean" streams (one running sum).

    python -c "import numpy as np; from orchestrator.robust import median; \
print(median(np.array([[0.0, 1.0], [1.0, 2.0], [100.0, -50.0]])))"   # [1. 1.]
"""

from __future__ import annotations

import numpy as np

from privacy.aggregate import WeightedPayload
from privacy.clipping import clip_to_norm
from privacy.codec import Codec, CodecError, Payload

RULES = ("mean", "median", "trimmed_mean", "krum", "multi_krum")


def median(updates: np.ndarray) -> np.ndarray:
    """Coordinate-wise median (unweighted)."""
    return np.asarray(np.median(updates, axis=0))


def trimmed_mean(updates: np.ndarray, fraction: float) -> np.ndarray:
    """Per coordinate: drop the floor(fraction * n) largest and smallest values, average the rest."""
    n = len(updates)
    cut = int(np.floor(fraction * n))
    if 2 * cut >= n:
        raise ValueError(f"trim fraction {fraction} leaves nothing of {n} updates")
    ordered = np.sort(updates, axis=0)
    return np.asarray(ordered[cut : n - cut].mean(axis=0))


def krum_scores(updates: np.ndarray, byzantine: int) -> np.ndarray:
    """Each update's sum of squared distances to its n - f - 2 nearest others (at least one)."""
    n = len(updates)
    squares = np.sum(updates * updates, axis=1)
    distances = np.maximum(squares[:, None] + squares[None, :] - 2.0 * updates @ updates.T, 0.0)
    neighbours = max(1, min(n - 1, n - byzantine - 2))
    ordered = np.sort(distances, axis=1)[:, 1 : neighbours + 1]  # column 0 is the update itself
    return np.asarray(ordered.sum(axis=1))


def krum(updates: np.ndarray, byzantine: int) -> np.ndarray:
    """The single update with the lowest Krum score."""
    return np.asarray(updates[int(np.argmin(krum_scores(updates, byzantine)))].copy())


def multi_krum(updates: np.ndarray, weights: np.ndarray, byzantine: int, m: int | None) -> np.ndarray:
    """The weighted mean of the ``m`` updates with the lowest Krum scores (default m = n - f)."""
    n = len(updates)
    keep = min(n, max(1, m if m is not None else n - byzantine))
    chosen = np.argsort(krum_scores(updates, byzantine), kind="stable")[:keep]
    w = weights[chosen]
    return np.asarray((updates[chosen] * w[:, None]).sum(axis=0) / w.sum())


def combine(
    rule: str,
    updates: np.ndarray,
    weights: np.ndarray,
    *,
    trim_fraction: float = 0.25,
    byzantine: int = 0,
    multi_krum_m: int | None = None,
) -> np.ndarray:
    """One rule over the rows of ``updates`` (models w_k) with aggregation ``weights`` (n_k)."""
    if rule == "mean":
        return np.asarray((updates * weights[:, None]).sum(axis=0) / weights.sum())
    if rule == "median":
        return median(updates)
    if rule == "trimmed_mean":
        return trimmed_mean(updates, trim_fraction)
    if rule == "krum":
        return krum(updates, byzantine)
    if rule == "multi_krum":
        return multi_krum(updates, weights, byzantine, multi_krum_m)
    raise ValueError(f"unknown aggregation rule {rule!r}; choose one of {RULES}")


class RobustSum:
    """Plaintext aggregation that sees each update: decode, check, bound, then one rule."""

    def __init__(
        self,
        codec: Codec,
        rule: str = "mean",
        reference: np.ndarray | None = None,
        clip_norm: float = 0.0,
        **params: float | int | None,
    ) -> None:
        if codec.name != "off":
            raise ValueError(f"rule {rule!r} needs plaintext updates; codec {codec.name!r} hides them")
        self._codec, self._rule, self._params = codec, rule, params
        self._reference, self._clip = reference, clip_norm
        self._rows: list[np.ndarray] = []
        self._weights: list[float] = []
        self._sum: np.ndarray | None = None  # "mean" streams
        self.weight = 0.0
        self.count = 0
        self.clipped = 0  # updates the orchestrator scaled down

    def add(self, item: WeightedPayload) -> None:
        values = self._codec.decode(item.payload) / item.weight
        if not np.all(np.isfinite(values)):
            raise CodecError("update has NaN or infinite values")
        ref = self._reference
        if self._clip > 0 and ref is not None and ref.size == values.size:
            clipped = clip_to_norm(values - ref, self._clip)
            if clipped.scale < 1.0:
                self.clipped += 1
                values = ref + clipped.values
        if self._rule == "mean":
            self._sum = values * item.weight if self._sum is None else self._sum + values * item.weight
        else:
            self._rows.append(values)
            self._weights.append(item.weight)
        self.weight += item.weight
        self.count += 1

    def mean(self) -> Payload:
        if self.count == 0:
            raise ValueError("nothing was added")
        if self._rule == "mean":
            assert self._sum is not None
            return self._codec.encode(self._sum / self.weight)
        result = combine(self._rule, np.stack(self._rows), np.asarray(self._weights), **self._params)  # type: ignore[arg-type]
        return self._codec.encode(result)

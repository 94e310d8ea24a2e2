"""Robust aggregation in plaintext mode (``privacy.he = "off"``): rules that must see single updates.

Free functions for the maths, on the silos' models w_k (rows of a matrix) and their aggregation
weights n_k: coordinate-wise median and trimmed mean (both n_k-weighted by default, like FedAvg;
``robust_weighting = "uniform"`` gives the unweighted textbook rules), Krum / multi-Krum
(Blanchard et al. 2017; Krum picks one silo's model, multi-Krum n_k-weights the ones it keeps),
and the n_k-weighted geometric median (RFA, Pillutla et al. 2022: smoothed Weiszfeld iterations).
All are translation invariant, so working on weights equals working on deltas w_k - w_global. `RobustSum` has
the interface of `privacy.aggregate.WeightedSum` (``add``, ``mean``) so the orchestrator
drives both alike; it also rejects non-finite updates and, with ``clip_norm``, bounds
||w_k - w_global|| (privacy.clipping.clip_to_norm). Plain "mean" streams (one running sum).

    python -c "import numpy as np; from orchestrator.robust import median; \
print(median(np.array([[0.0, 1.0], [1.0, 2.0], [100.0, -50.0]])))"   # [1. 1.]
    # weights [1, 1, 5]: the heavy third silo decides, [100. -50.]
"""

from __future__ import annotations

import numpy as np

from privacy.aggregate import WeightedPayload
from privacy.clipping import clip_to_norm
from privacy.codec import Codec, CodecError, Payload

RULES = ("mean", "median", "trimmed_mean", "krum", "multi_krum", "geometric_median")


def _checked_weights(weights: np.ndarray | None, n: int) -> np.ndarray:
    """``weights`` as floats (equal weights when None), or ValueError unless n of them, none
    negative, with a positive sum."""
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != (n,) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"need {n} non-negative weights with a positive sum, got {w.tolist()}")
    return w


def median(updates: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Weighted coordinate-wise median: per coordinate, the value at which the cumulative weight
    of the sorted values reaches half the total. Where it lands exactly on half (between two
    values), the mean of those two, so equal weights give the ordinary median (``np.median``).
    A silo with more than half the total weight decides every coordinate."""
    w = _checked_weights(weights, len(updates))
    order = np.argsort(updates, axis=0, kind="stable")
    ordered = np.take_along_axis(updates, order, axis=0)
    cumulative = np.cumsum(w[order], axis=0)
    half, tol = w.sum() / 2.0, 1e-12 * w.sum()
    lower = np.argmax(cumulative >= half - tol, axis=0)  # first value reaching half the weight
    upper = np.argmax(cumulative > half + tol, axis=0)  # first value passing it
    low = np.take_along_axis(ordered, lower[None, ...], axis=0)[0]
    high = np.take_along_axis(ordered, upper[None, ...], axis=0)[0]
    return np.asarray((low + high) / 2.0)


def trimmed_mean(updates: np.ndarray, fraction: float, weights: np.ndarray | None = None) -> np.ndarray:
    """Per coordinate: drop the k = floor(fraction * n) largest and smallest values, but at least
    one when fraction > 0 and three or more are left to trim (a round with fewer answers than
    planned must not quietly become the mean), then the weighted mean of the rest (each value
    keeps its silo's weight). The trim counts silos, not weight, so k attackers are cut whatever
    weight they claim; equal weights give the ordinary trimmed mean."""
    n = len(updates)
    cut = int(np.floor(fraction * n))
    if fraction > 0 and n >= 3:
        cut = max(cut, 1)
    if 2 * cut >= n:
        raise ValueError(f"trim fraction {fraction} leaves nothing of {n} updates")
    w = _checked_weights(weights, n)
    order = np.argsort(updates, axis=0, kind="stable")[cut : n - cut]
    kept = np.take_along_axis(updates, order, axis=0)
    kept_w = w[order]
    total = kept_w.sum(axis=0)
    if np.any(total <= 0):
        raise ValueError("the values kept after trimming have zero total weight")
    return np.asarray((kept * kept_w).sum(axis=0) / total)


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


def geometric_median(
    updates: np.ndarray, weights: np.ndarray | None = None, *, iterations: int = 100, smoothing: float = 1e-6
) -> np.ndarray:
    """The point z minimising sum_k n_k ||w_k - z|| (Weiszfeld's iterations, each distance at
    least ``smoothing`` as in RFA). Unlike the coordinate-wise median it keeps whole updates and
    their weights: with silos close together it is near their weighted mean, and an update
    pulls on it with a force of its weight, however far it is sent (breakdown point: half the
    total weight)."""
    w = _checked_weights(weights, len(updates))
    z = (updates * w[:, None]).sum(axis=0) / w.sum()
    scale = max(1.0, float(np.abs(updates).max()))
    for _ in range(iterations):
        beta = w / np.maximum(np.linalg.norm(updates - z, axis=1), smoothing)
        nxt = (updates * beta[:, None]).sum(axis=0) / beta.sum()
        done = np.linalg.norm(nxt - z) <= 1e-10 * scale
        z = nxt
        if done:
            break
    return np.asarray(z)


def combine(
    rule: str,
    updates: np.ndarray,
    weights: np.ndarray,
    *,
    trim_fraction: float = 0.25,
    byzantine: int = 0,
    multi_krum_m: int | None = None,
    robust_weighting: str = "examples",
) -> np.ndarray:
    """One rule over the rows of ``updates`` (models w_k) with aggregation ``weights`` (n_k).
    ``robust_weighting = "uniform"`` gives median, trimmed mean and geometric median equal
    weights (the textbook, unweighted rules); "examples" (default) weights them by n_k like FedAvg."""
    if robust_weighting not in ("examples", "uniform"):
        raise ValueError(f"robust_weighting must be 'examples' or 'uniform', got {robust_weighting!r}")
    rank_weights = weights if robust_weighting == "examples" else None
    if rule == "mean":
        return np.asarray((updates * weights[:, None]).sum(axis=0) / weights.sum())
    if rule == "median":
        return median(updates, rank_weights)
    if rule == "trimmed_mean":
        return trimmed_mean(updates, trim_fraction, rank_weights)
    if rule == "krum":
        return krum(updates, byzantine)
    if rule == "multi_krum":
        return multi_krum(updates, weights, byzantine, multi_krum_m)
    if rule == "geometric_median":
        return geometric_median(updates, rank_weights)
    raise ValueError(f"unknown aggregation rule {rule!r}; choose one of {RULES}")


class RobustSum:
    """Plaintext aggregation that sees each update: decode, check, bound, then one rule."""

    def __init__(
        self,
        codec: Codec,
        rule: str = "mean",
        reference: np.ndarray | None = None,
        clip_norm: float = 0.0,
        **params: float | int | str | None,
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
        if self._clip > 0 and ref is not None and ref.size <= values.size:
            n = ref.size  # the model; SCAFFOLD's control variate after it is not a model change
            clipped = clip_to_norm(values[:n] - ref, self._clip)
            if clipped.scale < 1.0:
                self.clipped += 1
                values = np.concatenate([ref + clipped.values, values[n:]])
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

"""Norm clipping of a silo's update, shared by robust aggregation and differential privacy.

An update here is a difference of weight vectors (local model minus the global model it
started from). Clipping it to an L2 bound limits what any one silo can move the global
model, and is the sensitivity bound that DP noise is calibrated to.

    python -c "from privacy.clipping import clip_to_norm; print(clip_to_norm([3.0, 4.0], 1.0))"
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Clipped:
    values: np.ndarray  # the update, scaled down so its L2 norm is at most the bound
    norm: float  # its L2 norm before clipping
    scale: float  # what it was multiplied by (1.0 when it was within the bound)


def clip_to_norm(update: Sequence[float] | np.ndarray, bound: float) -> Clipped:
    """``update`` scaled by min(1, bound / ||update||_2)."""
    if not bound > 0:
        raise ValueError(f"clipping bound must be positive, got {bound}")
    values = np.asarray(update, dtype=np.float64)
    norm = float(np.linalg.norm(values))
    if not np.isfinite(norm):
        raise ValueError("update is not finite")
    scale = 1.0 if norm <= bound else bound / norm
    return Clipped(values * scale if scale != 1.0 else values.copy(), norm, scale)

"""What a silo stages after local training: the clipped model, and SCAFFOLD's control half.

Norm bounding (``[training] clip_norm``): an honest silo scales its change of the model,
w_k - w_global, down to at most ``clip_norm`` (privacy.clipping.clip_to_norm) before it
weights and encrypts it. Under HE nobody else can check that it did (see README,
"Robust aggregation").

SCAFFOLD (Karimireddy et al. 2020, option II): the silo sends [w_k ; c + (c_i+ - c_i)],
so the weighted average the orchestrator forms under encryption is [new global ; new c].

    python -c "import numpy as np; from silo.update import *; from silo.messages import FitConfig; \
print(staged_update(np.zeros(2), np.array([3.0, 4.0]), FitConfig(1, 32, 0.1, clip_norm=1.0), 1, None))"
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from privacy.clipping import clip_to_norm
from silo.messages import FitConfig
from silo.server_opt import scaffold_control


@dataclass(frozen=True)
class Control:
    """SCAFFOLD's control variates as this silo sees them in one round."""

    c_global: np.ndarray  # c, from the decrypted global payload
    c_local: np.ndarray  # c_i, this silo's own (zeros after a restart)


@dataclass(frozen=True)
class Staged:
    vector: np.ndarray  # what is weighted by n_k and encrypted
    c_local: np.ndarray | None  # the silo's new c_i (SCAFFOLD), else None
    norm: float  # ||w_k - w_global|| before clipping


def staged_update(
    start: np.ndarray, end: np.ndarray, config: FitConfig, steps: int, control: Control | None
) -> Staged:
    """The vector to stage after training moved the model from ``start`` to ``end``: ``end``
    itself unless it must be clipped (no copy of a large model: the norm is taken in blocks)."""
    norm = distance(start, end)
    if not math.isfinite(norm):
        raise ValueError("update is not finite")
    weights = end
    if config.clip_norm > 0 and norm > config.clip_norm:
        start = np.asarray(start, dtype=np.float64)
        weights = start + clip_to_norm(np.asarray(end, dtype=np.float64) - start, config.clip_norm).values
    if control is None:
        return Staged(weights, None, norm)
    start, weights = np.asarray(start, dtype=np.float64), np.asarray(weights, dtype=np.float64)
    c_new = scaffold_control(control.c_global, control.c_local, start, weights, steps, config.lr)
    upload = control.c_global + (c_new - control.c_local)
    return Staged(np.concatenate([weights, upload]), c_new, norm)


def distance(a: np.ndarray, b: np.ndarray, block: int = 1 << 20) -> float:
    """||b - a||_2 in float64, a block at a time (temporaries of ``block`` values)."""
    if a.shape != b.shape:
        raise ValueError(f"vectors of {a.size} and {b.size} values")
    total = 0.0
    for i in range(0, a.size, block):
        d = np.asarray(b[i : i + block], dtype=np.float64) - a[i : i + block]
        total += float(d @ d)
    return math.sqrt(total)

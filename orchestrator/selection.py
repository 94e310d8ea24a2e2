"""Which silos train in a round: all that are able to, or a fraction of them (Flower's
``fraction_fit``), drawn afresh each round.

The draw is seeded by the run's seed, the round and the attempt, so a resumed run or a retried
round draws the same way a fresh one would, and a sample size never falls below ``min_silos``
(a smaller sample could never make a round). It is not secret: the orchestrator draws it and
the run logs who took part, which is why silo-level DP claims no amplification by sampling
(see ``privacy.dp``): a silo's accountant counts the rounds it trained in, at rate 1.

    python -c "from orchestrator.selection import select; print(select(list('abcd'), 0.5, 2, 0, 1))"
"""

from __future__ import annotations

import random


def sample_size(available: int, fraction: float, min_silos: int) -> int:
    """Flower's rule: int(available * fraction), at least min_silos, at most available."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return min(available, max(int(available * fraction), min_silos))


def select(
    available: list[str], fraction: float, min_silos: int, seed: int, server_round: int, attempt: int = 1
) -> list[str]:
    """The silos asked to train this round, in the order given."""
    size = sample_size(len(available), fraction, min_silos)
    if size >= len(available):
        return list(available)
    rng = random.Random(f"fedsilo-selection/{seed}/{server_round}/{attempt}")
    chosen = set(rng.sample(sorted(available), size))
    return [name for name in available if name in chosen]

"""A silo's differential-privacy state: its noise multiplier, its accountant, its budget.

The silo enforces its own budget: before a round it asks whether the round's steps would
take its epsilon past ``target_epsilon`` and, if so, refuses to train (an error in its FitRes,
which is data). The accountant is saved after every round on the silo's own node
(``SiloSpec.dp_state_path``, next to its HE key backup), so a restarted silo or a resumed
run goes on from what was spent rather than from zero.

    pytest tests/silo/test_privacy_budget.py -q
"""

from __future__ import annotations

import logging

import numpy as np

from privacy.clipping import clip_to_norm
from privacy.dp import (
    DPConfig,
    PrivacyAccountant,
    add_noise_share,
    budget_message,
    calibrate,
    noise_share_std,
)

logger = logging.getLogger(__name__)

# Opacus calibrates to within 0.01 below the target; this only absorbs float noise.
TOLERANCE = 1e-6


class SiloPrivacy:
    def __init__(self, config: DPConfig, state_path: str | None = None) -> None:
        self.config = config
        self._path = state_path
        loaded = PrivacyAccountant.load(state_path) if state_path else None
        if loaded is not None:
            logger.info("privacy accountant restored from %s: %s", state_path, loaded.history)
        self.accountant = loaded or PrivacyAccountant(config.accountant, config.noise_multiplier)
        # Epsilon computations take ~0.1 s (RDP over many orders): each is done once per round.
        self._spent = self.accountant.epsilon(config.delta)
        self._ahead: tuple[float, int, float] | None = None  # (rate, steps, epsilon after them)

    @property
    def noise_multiplier(self) -> float | None:
        return self.accountant.noise_multiplier

    def epsilon(self) -> float:
        return self._spent

    def plan(self, sample_rate: float, steps_per_round: int) -> float:
        """The noise multiplier: given, or calibrated once over every planned round."""
        if self.accountant.noise_multiplier is None:
            assert self.config.target_epsilon is not None
            self.accountant.noise_multiplier = calibrate(
                self.config.target_epsilon,
                self.config.delta,
                sample_rate,
                steps_per_round * self.config.planned_rounds,
                self.config.accountant,
            )
            logger.info(
                "noise multiplier %.4f for epsilon %g over %d rounds",
                self.accountant.noise_multiplier,
                self.config.target_epsilon,
                self.config.planned_rounds,
            )
        return self.accountant.noise_multiplier

    def refusal(self, sample_rate: float, steps: int) -> str | None:
        """Why this silo must not take ``steps`` more steps (None: within its budget)."""
        target = self.config.target_epsilon
        if target is None:
            return None
        after = self.accountant.epsilon_after(sample_rate, steps, self.config.delta)
        self._ahead = (sample_rate, steps, after)
        if after > target + TOLERANCE:
            return budget_message(self.epsilon(), target) + f" (the next round would reach {after:.3f})"
        return None

    def spend(self, sample_rate: float, steps: int) -> float:
        """Record the steps taken; persist; return epsilon spent so far."""
        self.accountant.step(sample_rate, steps)
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[:2] == (sample_rate, steps):
            self._spent = ahead[2]
        else:
            self._spent = self.accountant.epsilon(self.config.delta)
        if self._path:
            self.accountant.save(self._path)
        return self._spent

    def privatize(
        self, global_flat: np.ndarray, local_flat: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Silo mode: global + clip(local - global) + this silo's noise share."""
        assert self.noise_multiplier is not None
        delta = clip_to_norm(local_flat - global_flat, self.config.max_grad_norm).values
        std = noise_share_std(self.noise_multiplier, self.config.max_grad_norm, self.config.min_silos)
        return global_flat + add_noise_share(delta, std, rng)

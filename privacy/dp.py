"""Differential privacy: settings, noise calibration, a privacy accountant, distributed noise.

Two modes (``[privacy] dp`` in the pipeline):

- ``record``: each silo trains with DP-SGD (Opacus: per-sample clipping to ``max_grad_norm``,
  Gaussian noise ``noise_multiplier * max_grad_norm``, Poisson sampling). Neighbouring data
  sets differ in one record of one silo; each silo accounts for its own records.
- ``silo``: each silo clips its update (local model minus the global model it received) to
  ``max_grad_norm`` and adds a share of Gaussian noise, sized so that any ``min_silos`` shares
  add up to ``noise_multiplier * max_grad_norm``: the (encrypted) sum carries the full noise,
  no single update does. Neighbouring data sets differ in one whole silo.

Epsilon comes from Opacus's accountants ("rdp" by default; "prv", "gdp") over the steps
actually taken; the noise multiplier is calibrated over the whole planned run.

    python -c "from privacy.dp import calibrate; print(calibrate(8.0, 1e-5, 1.0, 20))"
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

DPMode = Literal["off", "record", "silo"]
ACCOUNTANTS = ("rdp", "prv", "gdp")


@dataclass(frozen=True)
class DPConfig:
    """A silo's differential-privacy settings (validated by the pipeline schema, checked again here)."""

    mode: DPMode = "off"
    target_epsilon: float | None = None  # the budget; None: noise_multiplier is given, no budget
    delta: float = 1e-5
    noise_multiplier: float | None = None  # None: calibrated from target_epsilon over the planned run
    max_grad_norm: float = 1.0  # record: per-sample gradient bound; silo: update norm bound
    accountant: str = "rdp"
    # The pipeline file's rounds (not `--rounds`): with a budget, noise is calibrated so these
    # rounds spend it; a run asked for more stops cleanly when the budget is spent.
    planned_rounds: int = 1
    min_silos: int = 1  # silo mode: noise shares are sized so this many carry the full noise

    def __post_init__(self) -> None:
        if self.mode == "off":
            return
        if (self.target_epsilon is None) == (self.noise_multiplier is None):
            raise ValueError("set exactly one of target_epsilon and noise_multiplier")
        if self.target_epsilon is not None and not self.target_epsilon > 0:
            raise ValueError(f"target_epsilon must be positive, got {self.target_epsilon}")
        if self.noise_multiplier is not None and not self.noise_multiplier > 0:
            raise ValueError(f"noise_multiplier must be positive, got {self.noise_multiplier}")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta}")
        if not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive, got {self.max_grad_norm}")
        if self.accountant not in ACCOUNTANTS:
            raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {self.accountant!r}")

    @property
    def enabled(self) -> bool:
        return self.mode != "off"


@functools.lru_cache(maxsize=64)  # a pure function that takes seconds: silos of one size share it
def calibrate(
    target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str = "rdp"
) -> float:
    """The smallest noise multiplier that keeps ``steps`` steps at ``sample_rate`` within epsilon."""
    from opacus.accountants.utils import get_noise_multiplier

    return float(
        get_noise_multiplier(
            target_epsilon=target_epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=max(1, steps),
            accountant=accountant,
        )
    )


def record_plan(
    rows: int, batch_size: int, local_epochs: int, local_steps: int | None = None
) -> tuple[float, int]:
    """(Poisson sample rate, steps per round) of DP-SGD over ``rows`` rows, as Opacus's
    DPDataLoader does it: one step per batch of the plain loader, each row in with probability q;
    ``local_steps`` such steps when given, else ``local_epochs`` passes."""
    batches = max(1, math.ceil(rows / batch_size))
    return 1.0 / batches, local_steps if local_steps is not None else batches * local_epochs


def noise_share_std(noise_multiplier: float, max_norm: float, shares: int) -> float:
    """One silo's noise standard deviation: ``shares`` of them add up to sigma * C."""
    return noise_multiplier * max_norm / math.sqrt(max(1, shares))


def add_noise_share(values: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    return values + rng.normal(0.0, std, size=values.shape)


def budget_message(epsilon: float, target: float) -> str:
    return f"privacy budget spent: epsilon {epsilon:.3f} of {target:g}"


class PrivacyAccountant:
    """Opacus's accountant (by name) with the noise multiplier the run was calibrated to; saved as
    JSON so that a silo restarted, or a run resumed, goes on from what was already spent."""

    def __init__(self, name: str = "rdp", noise_multiplier: float | None = None) -> None:
        from opacus.accountants import create_accountant

        self.name = name
        self.noise_multiplier = noise_multiplier
        self._accountant = create_accountant(name)

    @property
    def history(self) -> list[tuple[float, float, int]]:
        return list(self._accountant.history)

    def step(self, sample_rate: float, steps: int = 1) -> None:
        assert self.noise_multiplier is not None, "calibrate or set the noise multiplier first"
        if self.name == "rdp":  # one entry for many identical steps (what Opacus's step merges to)
            history = self._accountant.history
            if history and history[-1][:2] == (self.noise_multiplier, sample_rate):
                history[-1] = (self.noise_multiplier, sample_rate, history[-1][2] + steps)
            else:
                history.append((self.noise_multiplier, sample_rate, steps))
            return
        for _ in range(steps):
            self._accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=sample_rate)

    def epsilon(self, delta: float) -> float:
        if not self._accountant.history:
            return 0.0
        return float(self._accountant.get_epsilon(delta=delta))

    def epsilon_after(self, sample_rate: float, steps: int, delta: float) -> float:
        """Epsilon if ``steps`` more steps were taken (nothing is spent)."""
        trial = PrivacyAccountant(self.name, self.noise_multiplier)
        trial._accountant.history = self.history
        trial.step(sample_rate, steps)
        return trial.epsilon(delta)

    def to_json(self) -> str:
        return json.dumps(
            {
                "accountant": self.name,
                "noise_multiplier": self.noise_multiplier,
                "history": [list(h) for h in self._accountant.history],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> PrivacyAccountant:
        data = json.loads(text)
        accountant = cls(data["accountant"], data["noise_multiplier"])
        accountant._accountant.history = [(float(s), float(q), int(n)) for s, q, n in data["history"]]
        return accountant

    def save(self, path: str) -> None:
        """Atomically, readable by this node's user only."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(self.to_json())
        os.replace(temporary, target)

    @classmethod
    def load(cls, path: str) -> PrivacyAccountant | None:
        try:
            return cls.from_json(Path(path).read_text())
        except FileNotFoundError:
            return None

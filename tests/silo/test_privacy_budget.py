"""A silo's privacy state: calibration over the planned rounds, refusal, persistence, clipping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from privacy.dp import DPConfig
from silo.privacy_budget import SiloPrivacy

RECORD = DPConfig(mode="record", target_epsilon=3.0, delta=1e-5, max_grad_norm=1.0, planned_rounds=3)


def test_planned_rounds_spend_the_budget_then_the_silo_refuses() -> None:
    privacy = SiloPrivacy(RECORD)
    privacy.plan(0.25, 4)
    for _ in range(3):
        assert privacy.refusal(0.25, 4) is None
        privacy.spend(0.25, 4)

    refusal = privacy.refusal(0.25, 4)

    assert privacy.epsilon() == pytest.approx(3.0, abs=0.02)
    assert refusal is not None
    assert refusal.startswith(f"privacy budget spent: epsilon {privacy.epsilon():.3f} of 3")


def test_noise_multiplier_is_kept_across_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "s.json")
    first = SiloPrivacy(RECORD, path)
    sigma = first.plan(0.25, 4)
    first.spend(0.25, 4)
    first.spend(0.25, 4)

    restarted = SiloPrivacy(RECORD, path)

    assert restarted.plan(0.5, 2) == sigma  # not calibrated again
    assert restarted.epsilon() == first.epsilon()
    restarted.spend(0.25, 4)
    assert restarted.refusal(0.25, 4) is not None


def test_given_noise_multiplier_has_no_budget() -> None:
    privacy = SiloPrivacy(DPConfig(mode="record", noise_multiplier=0.5, planned_rounds=1))
    assert privacy.plan(0.5, 2) == 0.5
    for _ in range(5):
        privacy.spend(0.5, 2)
    assert privacy.refusal(0.5, 2) is None and privacy.epsilon() > 10


def test_silo_mode_clips_the_update_and_adds_a_share_of_noise() -> None:
    config = DPConfig(mode="silo", noise_multiplier=2.0, max_grad_norm=0.5, min_silos=4, planned_rounds=2)
    privacy = SiloPrivacy(config)
    privacy.plan(1.0, 1)
    start = np.zeros(50_000)
    local = np.full(50_000, 1.0)  # update norm ~224, far above the bound

    sent = privacy.privatize(start, local, np.random.default_rng(3))

    clipped = 0.5 / np.sqrt(50_000)
    assert np.mean(sent) == pytest.approx(clipped, abs=0.01)
    assert np.std(sent) == pytest.approx(2.0 * 0.5 / 2, rel=0.02)  # sigma * C / sqrt(min_silos)

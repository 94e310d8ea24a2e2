"""privacy/dp.py: calibration, the accountant across rounds, distributed noise shares."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from privacy.dp import (
    DPConfig,
    PrivacyAccountant,
    add_noise_share,
    budget_message,
    calibrate,
    noise_share_std,
    record_plan,
)


@pytest.mark.parametrize(("epsilon", "rate", "steps"), [(1.0, 0.1, 100), (8.0, 0.125, 160), (3.0, 1.0, 20)])
def test_calibrated_noise_spends_the_target_epsilon(epsilon: float, rate: float, steps: int) -> None:
    sigma = calibrate(epsilon, 1e-5, rate, steps)
    accountant = PrivacyAccountant("rdp", sigma)
    accountant.step(rate, steps)

    spent = accountant.epsilon(1e-5)

    assert epsilon - 0.05 < spent <= epsilon  # Opacus calibrates to within 0.01 below
    assert calibrate(epsilon / 2, 1e-5, rate, steps) > sigma  # a smaller budget needs more noise


def test_epsilon_grows_with_every_round_and_matches_opacus_stepwise() -> None:
    from opacus.accountants import RDPAccountant

    accountant = PrivacyAccountant("rdp", 1.1)
    reference = RDPAccountant()
    spent = []
    for _ in range(5):
        accountant.step(0.2, 8)
        for _ in range(8):
            reference.step(noise_multiplier=1.1, sample_rate=0.2)
        spent.append(accountant.epsilon(1e-5))

    assert all(b > a for a, b in zip(spent, spent[1:], strict=False))
    assert spent[-1] == pytest.approx(reference.get_epsilon(1e-5), rel=1e-9)
    assert accountant.history == [(1.1, 0.2, 40)]


@pytest.mark.parametrize("name", ["prv", "gdp"])
def test_other_opacus_accountants_by_name(name: str) -> None:
    accountant = PrivacyAccountant(name, 1.0)
    accountant.step(0.1, 5)
    first = accountant.epsilon(1e-5)
    accountant.step(0.1, 5)

    assert 0 < first < accountant.epsilon(1e-5)


def test_epsilon_after_spends_nothing() -> None:
    accountant = PrivacyAccountant("rdp", 1.0)
    accountant.step(0.1, 10)
    before = accountant.epsilon(1e-5)

    ahead = accountant.epsilon_after(0.1, 10, 1e-5)

    assert ahead > before == accountant.epsilon(1e-5)
    assert PrivacyAccountant("rdp", 1.0).epsilon(1e-5) == 0.0


def test_saved_accountant_goes_on_from_what_was_spent(tmp_path: Path) -> None:
    accountant = PrivacyAccountant("rdp", 0.9)
    accountant.step(0.25, 4)
    path = str(tmp_path / "privacy" / "silo.json")
    accountant.save(path)

    restored = PrivacyAccountant.load(path)

    assert restored is not None and restored.noise_multiplier == 0.9
    assert restored.epsilon(1e-5) == accountant.epsilon(1e-5)
    assert (tmp_path / "privacy" / "silo.json").stat().st_mode & 0o077 == 0
    assert PrivacyAccountant.load(str(tmp_path / "none.json")) is None


def test_distributed_noise_shares_add_up_to_the_full_variance() -> None:
    sigma, clip, shares, samples = 1.3, 0.5, 4, 200_000
    std = noise_share_std(sigma, clip, shares)
    rng = np.random.default_rng(7)

    summed = sum(add_noise_share(np.zeros(samples), std, rng) for _ in range(shares))
    one = add_noise_share(np.zeros(samples), std, rng)

    assert np.var(summed) == pytest.approx((sigma * clip) ** 2, rel=0.02)
    assert np.var(one) == pytest.approx((sigma * clip) ** 2 / shares, rel=0.02)
    assert abs(np.mean(summed)) < 0.01


def test_record_plan_is_opacus_poisson_sampling() -> None:
    assert record_plan(98, 32, 1) == (0.25, 4)
    assert record_plan(242, 32, 2) == (0.125, 16)
    assert record_plan(5, 32, 1) == (1.0, 1)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"target_epsilon": 0.0}, "target_epsilon must be positive"),
        ({"target_epsilon": 1.0, "noise_multiplier": 1.0}, "exactly one"),
        ({}, "exactly one"),
        ({"target_epsilon": 1.0, "delta": 1.0}, "delta"),
        ({"noise_multiplier": 1.0, "max_grad_norm": 0.0}, "max_grad_norm"),
        ({"noise_multiplier": 1.0, "accountant": "moments"}, "accountant"),
    ],
)
def test_impossible_settings_are_refused(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DPConfig(mode="record", **settings)


def test_budget_message_says_spent_of_target() -> None:
    assert budget_message(7.9991, 8.0) == "privacy budget spent: epsilon 7.999 of 8"

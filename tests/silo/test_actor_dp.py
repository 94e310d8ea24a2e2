"""The silo's protocol with differential privacy, driven in-process (the class Ray runs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from orchestrator.schema import agree
from privacy.codec import PlainCodec
from privacy.dp import DPConfig
from privacy.params import HEConfig
from silo.actor import SiloWorker
from silo.config import DataSpec, ModelSpec, SiloSpec
from silo.messages import FitConfig, FitIns
from silo.models import get_flat
from tests.conftest import synthetic_silo
from tests.silo.test_actor import _sum

BINARY = DataSpec(target="y", categorical=("color",))
CONFIG = FitConfig(local_epochs=1, batch_size=16, lr=0.5)


def _ready(paths: list[Path], dp: DPConfig, state: Path | None = None) -> list[SiloWorker]:
    silos = [
        SiloWorker(
            SiloSpec(
                f"s{i}",
                str(p),
                BINARY,
                ModelSpec(),
                he=HEConfig(scheme="off"),
                dp=dp,
                dp_state_path=str(state / f"s{i}.json") if state else None,
            )
        )  # fmt: skip
        for i, p in enumerate(paths)
    ]
    schema = agree([s.describe() for s in silos])
    codec = PlainCodec()
    sums = _sum(codec, silos, [s.stats_sums(schema) for s in silos], "stats-1").total()
    squares = _sum(codec, silos, [s.stats_squares(sums) for s in silos], "stats-2").total()
    for s in silos:
        s.finish_preprocessing(squares)
    return silos


def test_silo_mode_sends_a_clipped_noised_update_with_weight_one(write_table) -> None:
    paths = [write_table(f"b{i}", synthetic_silo(n, seed=i)) for i, n in enumerate([120, 80])]
    dp = DPConfig(mode="silo", noise_multiplier=1e-6, max_grad_norm=0.05, min_silos=2, planned_rounds=3)
    silos = _ready(paths, dp)
    start = get_flat(silos[0]._model)

    results = [s.fit(FitIns(1, None, CONFIG)) for s in silos]

    for silo, res in zip(silos, results, strict=True):
        assert not res.has_error() and res.epsilon is not None and res.epsilon > 0
        assert res.noise_multiplier == 1e-6
        assert silo._staged is not None
        values, weight, _ = silo._staged
        assert weight == 1.0  # uniform: sensitivity C / K, not n_k C / sum(n)
        assert np.linalg.norm(values - start) <= 0.05 + 1e-4


def test_record_mode_refuses_past_its_budget_as_data(write_table, tmp_path: Path) -> None:
    paths = [write_table(f"r{i}", synthetic_silo(n, seed=i)) for i, n in enumerate([120, 80])]
    dp = DPConfig(mode="record", target_epsilon=2.0, delta=1e-3, max_grad_norm=1.0, planned_rounds=1)
    silos = _ready(paths, dp, tmp_path)

    first = [s.fit(FitIns(1, None, CONFIG)) for s in silos]
    staged_weight = silos[0]._staged[1] if silos[0]._staged else None
    running = _sum(PlainCodec(), silos, [r.bound_hint for r in first], "round-1")
    second = [s.fit(FitIns(2, running.mean(), CONFIG)) for s in silos]

    assert all(not r.has_error() and 1.9 < (r.epsilon or 0) <= 2.0 for r in first)
    assert staged_weight == float(first[0].examples)  # record mode keeps weighting by rows
    for res in second:
        assert res.budget_spent and res.error is not None
        assert res.error.startswith(f"privacy budget spent: epsilon {res.epsilon:.3f} of 2")
        assert res.evaluation is not None  # the incoming model was still scored
    assert (tmp_path / "s0.json").is_file()
    # A restarted silo (a new worker from the same spec, as Ray restarts it) reads what it spent
    restarted = _ready(paths, dp, tmp_path)
    again = [s.fit(FitIns(2, running.mean(), CONFIG)) for s in restarted]
    for before, res in zip(first, again, strict=True):
        assert res.budget_spent and res.epsilon == before.epsilon


@pytest.mark.parametrize("accountant", ["prv", "gdp"])
def test_record_mode_calibrates_and_spends_the_budget_with_each_opacus_accountant(
    write_table, accountant: str
) -> None:
    paths = [write_table(f"{accountant}{i}", synthetic_silo(n, seed=i)) for i, n in enumerate([120, 80])]
    dp = DPConfig(mode="record", target_epsilon=3.0, delta=1e-3, accountant=accountant, planned_rounds=2)
    silos = _ready(paths, dp)

    first = [s.fit(FitIns(1, None, CONFIG)) for s in silos]
    running = _sum(PlainCodec(), silos, [r.bound_hint for r in first], "round-1")
    second = [s.fit(FitIns(2, running.mean(), CONFIG)) for s in silos]

    for one, two in zip(first, second, strict=True):
        assert not one.has_error() and not two.has_error()
        assert 0 < (one.epsilon or 0) < (two.epsilon or 0) <= 3.0
        assert two.epsilon == pytest.approx(3.0, rel=0.05)  # the planned rounds spend the target


def test_record_mode_trains_a_tiny_and_a_single_class_silo(write_table) -> None:
    positive = synthetic_silo(120, seed=3)
    frames = [synthetic_silo(80, seed=2), positive[positive["y"] == 1].head(30), synthetic_silo(6, seed=4)]
    paths = [write_table(f"t{i}", f) for i, f in enumerate(frames)]
    dp = DPConfig(mode="record", noise_multiplier=1.0, delta=1e-3, max_grad_norm=1.0, planned_rounds=1)
    silos = _ready(paths, dp)

    results = [s.fit(FitIns(1, None, CONFIG)) for s in silos]

    for silo, res in zip(silos, results, strict=True):
        assert not res.has_error(), res.error
        assert res.epsilon is not None and res.epsilon > 0 and silo._staged is not None
    # fewer rows than batch_size (16): one Poisson batch per epoch at sample rate 1, as Opacus plans it
    assert len(silos[2]._train_set) < CONFIG.batch_size and results[2].examples == len(silos[2]._train_set)

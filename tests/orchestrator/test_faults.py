"""Faults a cross-organization federation meets, on real Ray: a silo whose process dies
mid-round (restarted, rejoins), a round retried until enough silos are back, a straggler."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import ray
from mlflow.tracking import MlflowClient

from orchestrator.actor import Orchestrator
from orchestrator.errors import RoundFailed
from orchestrator.settings import OrchestratorSettings
from orchestrator.strategies import FedAvg
from pipelines.tracking import RunTracker
from privacy.dp import DPConfig
from privacy.params import HEConfig, PackedParams
from silo.actor import SiloWorker, silo_actor
from silo.config import DataSpec, ModelSpec, SiloSpec
from silo.messages import FitIns, FitRes
from tests.conftest import synthetic_silo

DATA = DataSpec(target="y", categorical=("color",))


class DiesInRoundTwo(SiloWorker):
    """Its process exits in the middle of round 2's training, once (a marker file remembers)."""

    def fit(self, ins: FitIns) -> FitRes:
        marker = Path(self.spec.path).with_suffix(".died")
        if ins.round == 2 and not marker.exists():
            marker.touch()
            os._exit(1)
        return super().fit(ins)


class SlowInRoundTwo(SiloWorker):
    def fit(self, ins: FitIns) -> FitRes:
        if ins.round == 2:
            time.sleep(3.5)
        return super().fit(ins)


def _federation(
    namespace: str,
    paths: dict[str, Path],
    classes: dict[str, type[SiloWorker]],
    dp: DPConfig | None = None,
    **settings: Any,
) -> tuple[dict[str, Any], Any]:
    he = HEConfig(packed=PackedParams(max_silos=len(paths)))

    def spec(name: str, path: Path) -> SiloSpec:
        if dp is None:
            return SiloSpec(name, str(path), DATA, ModelSpec(), he=he)
        state = str(path.with_name(f"{name}.privacy.json"))  # on the silo's node, as in a run
        return SiloSpec(name, str(path), DATA, ModelSpec(), he=he, dp=dp, dp_state_path=state)

    silos = {
        name: silo_actor(classes.get(name), num_cpus=0.1)
        .options(name=f"silo:{name}", namespace=namespace, max_restarts=2)
        .remote(spec(name, path))
        for name, path in paths.items()
    }
    options = {"min_silos": 2, "round_timeout_s": 60.0, "retry_wait_s": 1.0, **settings}
    orchestrator = ray.remote(num_cpus=0.1)(Orchestrator).remote(
        silos, FedAvg(lr=0.1), OrchestratorSettings(he=he, **options)
    )
    ray.get(orchestrator.setup.remote())
    return silos, orchestrator


@pytest.fixture
def paths(write_table) -> dict[str, Path]:
    return {
        name: write_table(name, synthetic_silo(60, seed=i))
        for i, name in enumerate(["north", "south", "east"])
    }


def _cleanup(silos: dict[str, Any], orchestrator: Any) -> None:
    for handle in [*silos.values(), orchestrator]:
        ray.kill(handle)


def test_a_silo_that_dies_mid_round_is_restarted_and_rejoins(ray_local, namespace, paths, tmp_path) -> None:
    # Prepare
    # status_timeout_s: round 3 waits for east's restart however busy the machine is
    silos, orchestrator = _federation(namespace, paths, {"east": DiesInRoundTwo}, status_timeout_s=90.0)
    tracker = RunTracker(f"sqlite:///{tmp_path / 'mlruns.db'}", "faults", "dies-mid-round")
    try:
        # Execute: the rounds, logged to MLflow as `fedsilo run` logs them
        records = [ray.get(orchestrator.run_round.remote(r)) for r in (1, 2, 3, 4)]
        final = ray.get(orchestrator.evaluate.remote())
        for record in records:
            tracker.log_round(record)
        tracker.finish(True)
        # Assert: participants dip in round 2 and recover once east has restarted and rejoined
        counts = [len(r.participants) for r in records]
        assert counts == [3, 2, 3, 3], [r.failures for r in records]
        (failure,) = records[1].failures
        assert failure.silo == "east" and "unavailable" in failure.reason
        assert records[2].rejoined == ("east",)
        assert set(final.per_silo) == {"north", "south", "east"} and final.accuracy > 0.6
        # ... and MLflow shows the dip and the recovery, one point per round
        history = MlflowClient(tracker.tracking_uri).get_metric_history(tracker.run_id, "round/participants")
        logged = [int(m.value) for m in sorted(history, key=lambda m: m.step)]
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2, 3, 4]
        assert logged == counts and logged[1] < logged[0] and logged[3] == 3
    finally:
        _cleanup(silos, orchestrator)


def test_a_round_short_of_silos_is_retried_until_they_are_back(ray_local, namespace, paths) -> None:
    silos, orchestrator = _federation(namespace, paths, {"east": DiesInRoundTwo}, min_silos=3)
    try:
        ray.get(orchestrator.run_round.remote(1))
        record = ray.get(orchestrator.run_round.remote(2))
        assert record.attempts >= 2 and record.rejoined == ("east",)
        assert sorted(record.participants) == ["east", "north", "south"]
    finally:
        _cleanup(silos, orchestrator)


def test_a_round_stops_after_its_retries_naming_the_silos(ray_local, namespace, paths) -> None:
    silos, orchestrator = _federation(
        namespace, paths, {}, min_silos=3, round_retries=1, status_timeout_s=2.0
    )
    try:
        ray.kill(silos["east"])  # no restart: gone for good
        start = time.monotonic()
        with pytest.raises(RoundFailed) as caught:
            ray.get(orchestrator.run_round.remote(1))
        assert time.monotonic() - start >= 1.0  # one retry after retry_wait_s
        assert "only 2 silo(s) answered, min_silos is 3" in str(caught.value)
        assert [f.silo for f in caught.value.failures] == ["east"]
    finally:
        _cleanup(silos, orchestrator)


def test_a_straggler_is_left_out_and_its_late_update_never_used(ray_local, namespace, paths) -> None:
    silos, orchestrator = _federation(namespace, paths, {"east": SlowInRoundTwo}, round_timeout_s=3.0)
    try:
        first = ray.get(orchestrator.run_round.remote(1))
        second = ray.get(orchestrator.run_round.remote(2))
        third = ray.get(orchestrator.run_round.remote(3))
        assert len(first.participants) == 3
        assert sorted(second.participants) == ["north", "south"] and second.late == ("east",)
        assert any(f.silo == "east" and f.reason.startswith("late") for f in second.failures)
        assert sorted(third.participants) == [
            "east",
            "north",
            "south",
        ]  # its round-3 update, signed for round 3
    finally:
        _cleanup(silos, orchestrator)


def test_a_silo_killed_through_ray_is_restarted_and_rejoins_with_its_privacy_spent(
    ray_local, namespace, paths
) -> None:
    # Prepare: record-level DP, each silo's accountant saved next to its data after every round
    dp = DPConfig(mode="record", noise_multiplier=1.0, delta=1e-3, planned_rounds=4)
    silos, orchestrator = _federation(namespace, paths, {}, dp=dp)
    try:
        # Execute
        first = ray.get(orchestrator.run_round.remote(1))
        ray.kill(silos["east"], no_restart=False)  # `ray.kill` on silo:east, letting Ray restart it
        records = [ray.get(orchestrator.run_round.remote(r)) for r in (2, 3, 4)]
        # Assert: east is back, and its epsilon went on from round 1's (a fresh accountant
        # would have restarted from zero and reported round 1's epsilon again)
        assert any("east" in r.rejoined for r in records)
        assert sorted(records[-1].participants) == ["east", "north", "south"]
        east = [first.epsilon["east"]] + [r.epsilon["east"] for r in records if "east" in r.epsilon]
        assert len(east) >= 3 and all(a < b for a, b in zip(east, east[1:], strict=False)), east
    finally:
        _cleanup(silos, orchestrator)

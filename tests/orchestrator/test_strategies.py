"""Strategies on real Ray and real TenSEAL: FedAdam and SCAFFOLD under the packed codec, a robust
rule against a poisoning silo, and bad updates rejected by name, the round going on without them,
each rejection logged to a real MLflow store."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray

from orchestrator.actor import Orchestrator
from orchestrator.settings import OrchestratorSettings
from orchestrator.strategies import FedAvg, FedOpt, Robust, Scaffold, Strategy
from privacy.aggregate import bound_hint
from privacy.params import HEConfig, PackedParams
from silo.actor import SiloWorker, silo_actor
from silo.config import DataSpec, ModelSpec, SiloSpec
from silo.messages import FitIns, FitRes
from silo.models import get_flat
from tests.conftest import synthetic_silo

DATA = DataSpec(target="y", categorical=("color",))
NAMES = ["north", "south", "east", "west"]


class Flipped(SiloWorker):
    """Poisoning: sends w_global - 20 (w_k - w_global) in place of w_k (scaled, sign-flipped)."""

    def fit(self, ins: FitIns) -> FitRes:
        self._load_global(ins.global_payload)
        start = get_flat(self._model)
        res = super().fit(ins)
        assert self._staged is not None
        values, weight, exact = self._staged
        poisoned = start - 20.0 * (values - start)
        self._staged = (poisoned, weight, exact)
        return dataclasses.replace(res, bound_hint=bound_hint(poisoned, weight))


class SendsNaN(SiloWorker):
    def fit(self, ins: FitIns) -> FitRes:
        res = super().fit(ins)
        assert self._staged is not None
        values, weight, exact = self._staged
        self._staged = (np.full_like(values, np.nan), weight, exact)
        return res


class WrongLength(SiloWorker):
    def fit(self, ins: FitIns) -> FitRes:
        res = super().fit(ins)
        assert self._staged is not None
        values, weight, exact = self._staged
        self._staged = (values[:-1], weight, exact)
        return res


def _federation(
    namespace: str,
    paths: dict[str, Path],
    strategy: Strategy,
    he: HEConfig,
    classes: dict[str, type] | None = None,
    secagg: bool = False,
) -> tuple[dict[str, Any], Any]:
    silos = {
        name: silo_actor((classes or {}).get(name), num_cpus=0.1)
        .options(name=f"silo:{name}", namespace=namespace)
        .remote(SiloSpec(name, str(path), DATA, ModelSpec(), he=he))
        for name, path in paths.items()
    }
    settings = OrchestratorSettings(min_silos=2, round_timeout_s=60.0, he=he, secagg=secagg)
    orchestrator = ray.remote(num_cpus=0.1)(Orchestrator).remote(silos, strategy, settings)
    ray.get(orchestrator.setup.remote())
    return silos, orchestrator


def _rounds(orchestrator: Any, n: int) -> list[Any]:
    return [ray.get(orchestrator.run_round.remote(r)) for r in range(1, n + 1)]


def _cleanup(silos: dict[str, Any], orchestrator: Any) -> None:
    for handle in [*silos.values(), orchestrator]:
        ray.kill(handle)


@pytest.fixture
def paths(write_table) -> dict[str, Path]:
    return {name: write_table(name, synthetic_silo(60, seed=i)) for i, name in enumerate(NAMES)}


PACKED = HEConfig(packed=PackedParams(max_silos=4))


@pytest.mark.parametrize(
    "strategy",
    [
        FedOpt(name="fedadam", local_epochs=3, lr=0.2, server_lr=0.05, tau=1e-3),
        Scaffold(local_epochs=3, lr=0.2),
    ],
    ids=["fedadam", "scaffold"],
)
def test_strategy_under_packed_he_runs_and_lowers_the_loss(ray_local, namespace, paths, strategy) -> None:
    # Prepare: with secure aggregation (the leader decrypts the unmasked average; SCAFFOLD's [w ; c])
    silos, orchestrator = _federation(namespace, paths, strategy, PACKED, secagg=True)
    try:
        start = ray.get(orchestrator.evaluate.remote())
        # Execute
        records = _rounds(orchestrator, 4)
        final = ray.get(orchestrator.evaluate.remote())
        state = ray.get(orchestrator.state.remote())
        # Assert
        assert all(len(r.participants) == 4 for r in records)
        assert final.loss < 0.85 * start.loss and final.accuracy > 0.8
        assert not ray.get(orchestrator.can_decrypt.remote())
        if isinstance(strategy, FedOpt):  # Enc(m), Enc(v) made by the leader, kept for checkpoints
            assert [p.terms for p in state.server_state] == [("round-4/server/m",), ("round-4/server/v",)]
            assert state.global_payload.terms == ("round-4/server/global",)
        else:  # [w ; c]: twice the model's length, averaged under encryption
            assert state.server_state == () and state.global_payload.length == 2 * 6  # 6 parameters
    finally:
        _cleanup(silos, orchestrator)


def test_median_resists_a_poisoning_silo_that_fedavg_follows(ray_local, namespace, paths) -> None:
    # Prepare
    off = HEConfig(scheme="off")
    results = {}
    for strategy in (FedAvg(local_epochs=3, lr=0.2), Robust(name="median", local_epochs=3, lr=0.2)):
        silos, orchestrator = _federation(namespace + strategy.name, paths, strategy, off, {"west": Flipped})
        try:
            # Execute
            _rounds(orchestrator, 3)
            results[strategy.name] = ray.get(orchestrator.evaluate.remote())
        finally:
            _cleanup(silos, orchestrator)
    # Assert
    assert results["median"].accuracy > 0.8
    assert results["median"].loss < 0.5 * results["fedavg"].loss


def test_bad_updates_are_rejected_by_name_and_logged_to_mlflow(
    ray_local, namespace, paths, tmp_path, monkeypatch
) -> None:
    # Prepare
    import mlflow

    from pipelines.tracking import RunTracker

    monkeypatch.chdir(tmp_path)  # MLflow's artifact folder
    silos, orchestrator = _federation(
        namespace, paths, FedAvg(lr=0.1), HEConfig(scheme="off"), {"east": SendsNaN, "west": WrongLength}
    )
    tracker = RunTracker(f"sqlite:///{tmp_path / 'mlruns.db'}", "rejections", "test")
    try:
        # Execute
        records = _rounds(orchestrator, 2)
        for record in records:
            tracker.log_round(record)
        tracker.finish(ok=True)
    finally:
        _cleanup(silos, orchestrator)
    # Assert: the round went on with the two good silos; each bad one is named with its reason
    for record in records:
        assert sorted(record.participants) == ["north", "south"]
        assert sorted(record.rejected) == ["east", "west"]
        reasons = {f.silo: f.reason for f in record.failures}
        assert "update rejected" in reasons["east"] and "NaN or infinite" in reasons["east"]
        assert "update rejected" in reasons["west"] and "holds 5 values, expected 6" in reasons["west"]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    history = client.get_metric_history(tracker.run_id, "round/rejected")
    assert sorted((m.step, m.value) for m in history) == [(1, 2.0), (2, 2.0)]
    events = mlflow.artifacts.load_dict(f"runs:/{tracker.run_id}/events.json")["events"]
    assert {(e["round"], e["silo"]) for e in events if "update rejected" in e["event"]} == {
        (1, "east"), (1, "west"), (2, "east"), (2, "west"),
    }  # fmt: skip

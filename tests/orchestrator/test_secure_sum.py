"""Secure aggregation on real Ray: four silos mask every sum (statistics and rounds); one dies
before uploading, another after uploading and before the unmask step; the rounds stay exact
for the survivors, the dead silos restart and rejoin with new keys, and shares are re-dealt."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ray

from orchestrator.actor import Orchestrator
from orchestrator.settings import OrchestratorSettings
from orchestrator.strategies import FedAvg
from privacy.params import HEConfig, PackedParams
from privacy.secagg import UnmaskRequest, UnmaskShares
from privacy.signing import SignedUpdate
from silo.actor import SiloWorker, silo_actor
from silo.config import DataSpec, ModelSpec, SiloSpec
from tests.conftest import synthetic_silo

DATA = DataSpec(target="y", categorical=("color",))


def _once(spec: SiloSpec, what: str) -> bool:
    marker = Path(spec.path).with_suffix(f".{what}")
    if marker.exists():
        return False
    marker.touch()
    return True


class DiesBeforeUploadInRoundTwo(SiloWorker):
    def encode_staged(self, tag: str, bound: float, mask: Any = None) -> SignedUpdate:
        if tag.startswith("round-2/") and _once(self.spec, "died"):
            os._exit(1)
        return super().encode_staged(tag, bound, mask)


class DiesBeforeUnmaskInRoundThree(SiloWorker):
    def unmask(self, request: UnmaskRequest) -> UnmaskShares:
        if "/round-3/" in request.session and _once(self.spec, "died"):
            os._exit(1)
        return super().unmask(request)


def _federation(
    namespace: str, paths: dict[str, Path], classes: dict[str, type], workers: int = 1, **settings: Any
):
    he = HEConfig(packed=PackedParams(max_silos=len(paths)))
    silos = {
        name: silo_actor(classes.get(name), num_cpus=0.1)
        .options(name=f"silo:{name}", namespace=namespace, max_restarts=2)
        .remote(SiloSpec(name, str(path), DATA, ModelSpec(), he=he, workers=workers if name == "a" else 1))
        for name, path in paths.items()
    }
    options = {"min_silos": 2, "round_timeout_s": 60.0, "retry_wait_s": 1.0, "status_timeout_s": 90.0}
    orchestrator = ray.remote(num_cpus=0.1)(Orchestrator).remote(
        silos, FedAvg(lr=0.1), OrchestratorSettings(he=he, secagg=True, **{**options, **settings})
    )
    return silos, orchestrator


def _cleanup(silos: dict[str, Any], orchestrator: Any) -> None:
    for handle in [*silos.values(), orchestrator]:
        ray.kill(handle)


def test_secure_sums_survive_silos_dying_before_upload_and_before_unmask(
    ray_local, namespace, write_table
) -> None:
    # Prepare: four silos, packed HE with secure aggregation (threshold 3 of 4)
    paths = {name: write_table(name, synthetic_silo(60, seed=i)) for i, name in enumerate("abcd")}
    classes = {"c": DiesBeforeUnmaskInRoundThree, "d": DiesBeforeUploadInRoundTwo}
    silos, orchestrator = _federation(namespace, paths, classes, min_silos=3)
    try:
        report = ray.get(orchestrator.setup.remote())  # both statistics passes are masked sums
        # Execute
        records = [ray.get(orchestrator.run_round.remote(r)) for r in (1, 2, 3, 4)]
        final = ray.get(orchestrator.evaluate.remote())
        # Assert: d's update is missing from round 2 (its pair masks were rebuilt); c's is in
        # round 3 although it died before unmasking (its self-mask was rebuilt from shares)
        assert report.codec["secagg"].startswith("pairwise")
        assert [tuple(sorted(r.participants)) for r in records] == [
            ("a", "b", "c", "d"),
            ("a", "b", "c"),
            ("a", "b", "c", "d"),
            ("a", "b", "c", "d"),
        ], [r.failures for r in records]
        assert any(f.silo == "d" for f in records[1].failures)
        assert [f.silo for f in records[2].failures if "unmask" in f.reason] == ["c"]
        assert records[2].rejoined == ("d",) and records[3].rejoined == ("c",)
        # the masks cancel exactly: the model trained as an unmasked one would (garbage otherwise)
        assert final.accuracy > 0.6 and set(final.per_silo) == set("abcd")
        assert not ray.get(orchestrator.can_decrypt.remote())
    finally:
        _cleanup(silos, orchestrator)


def test_one_drop_more_than_the_threshold_allows_fails_the_round_cleanly_and_it_is_retried(
    ray_local, namespace, write_table
) -> None:
    # Prepare: three silos, all three needed (threshold 3); c dies before uploading in round 2;
    # a encrypts and decrypts in two worker processes (cpus_per_silo = 2)
    paths = {name: write_table(name, synthetic_silo(60, seed=i)) for i, name in enumerate("abc")}
    silos, orchestrator = _federation(
        namespace, paths, {"c": DiesBeforeUploadInRoundTwo}, workers=2, secagg_threshold=3, round_retries=2
    )
    try:
        ray.get(orchestrator.setup.remote())
        # Execute
        records = [ray.get(orchestrator.run_round.remote(r)) for r in (1, 2)]
        # Assert: round 2's first attempt could not be unmasked (2 survivors, threshold 3) and
        # yielded no aggregate; the second, with c restarted and rejoined, summed all three
        assert [r.attempts for r in records] == [1, 2]
        assert tuple(sorted(records[1].participants)) == ("a", "b", "c") and records[1].rejoined == ("c",)
        final = ray.get(orchestrator.evaluate.remote())
        assert final.after_round == 2 and final.accuracy > 0.5
    finally:
        _cleanup(silos, orchestrator)


def test_a_sum_of_many_uploads_is_re_encrypted_by_one_silo_before_it_goes_to_all(
    ray_local, namespace, write_table
) -> None:
    # Prepare: three silos; re-encrypt any average of more than 2 uploads (default: 8)
    paths = {name: write_table(name, synthetic_silo(60, seed=i)) for i, name in enumerate("abc")}
    silos, orchestrator = _federation(namespace, paths, {}, reseed_above=2)
    try:
        ray.get(orchestrator.setup.remote())
        # Execute
        records = [ray.get(orchestrator.run_round.remote(r)) for r in (1, 2, 3)]
        state = ray.get(orchestrator.state.remote())
        final = ray.get(orchestrator.evaluate.remote())
        # Assert: the global model is one silo's fresh, signed encryption (one c1 seed a
        # ciphertext, not three), and it trains as the seeded sum would
        assert state.global_payload.terms == ("round-3/server/global",)
        seeds = {int.from_bytes(chunk[4:8], "little") for chunk in state.global_payload.chunks}
        assert seeds == {1}  # the compact header: b"FSC1", then the seed count
        assert all(len(r.participants) == 3 for r in records)
        assert final.accuracy > 0.6
    finally:
        _cleanup(silos, orchestrator)

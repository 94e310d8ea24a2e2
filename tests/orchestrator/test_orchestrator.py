"""The orchestrator and silos as real Ray actors: keys, rounds, failures as data."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray

from orchestrator.actor import Orchestrator
from orchestrator.errors import RoundFailed, SchemaMismatch, SetupFailed
from orchestrator.settings import OrchestratorSettings
from orchestrator.strategies import FedAvg, FedProx
from privacy.aggregate import WeightedPayload, encode_weighted
from privacy.codec import PlainCodec
from privacy.keyfile import read_public_key_file, write_key_files
from privacy.packed import PackedKeys
from privacy.params import HEConfig, PackedParams
from privacy.sealing import SealError, SealingKey
from privacy.signing import SignedUpdate, UpdateSigner
from silo.actor import SiloWorker, silo_actor
from silo.config import DataSpec, ModelSpec, SiloSpec
from silo.messages import FitIns, FitRes, KeyBundle
from silo.models import get_flat
from tests.conftest import synthetic_silo

DATA = DataSpec(target="y", categorical=("color",))


def _start(
    namespace: str,
    paths: dict[str, Path],
    he: str = "packed",
    min_silos: int = 2,
    strategy: Any = None,
    classes: dict[str, type[SiloWorker]] | None = None,
    secrets: dict[str, Path] | None = None,
    provisioned: tuple[bytes, str] | None = None,
) -> tuple[dict[str, Any], Any]:
    config = HEConfig(scheme=he, packed=PackedParams(max_silos=max(2, len(paths))))
    silos = {
        name: silo_actor((classes or {}).get(name), num_cpus=0.1)
        .options(name=f"silo:{name}", namespace=namespace)
        .remote(
            SiloSpec(
                name=name,
                path=str(path),
                data=DATA,
                model=ModelSpec("logistic"),
                he=config,
                he_secret_path=str(secrets[name]) if secrets else None,
            )  # fmt: skip
        )
        for name, path in paths.items()
    }
    settings = OrchestratorSettings(
        min_silos=min_silos,
        round_timeout_s=60,
        he=config,
        provisioned_public=provisioned,
        setup_timeout_s=120,
    )
    orchestrator = (
        ray.remote(num_cpus=0.1)(Orchestrator)
        .options(name="orchestrator", namespace=namespace)
        .remote(silos, strategy or FedAvg(lr=0.1), settings)
    )
    return silos, orchestrator


def _cleanup(silos: dict[str, Any], orchestrator: Any) -> None:
    for handle in [*silos.values(), orchestrator]:
        ray.kill(handle)


@pytest.fixture
def three_silos(write_table) -> dict[str, Path]:
    return {name: write_table(name, synthetic_silo(n, seed=i)) for i, (name, n) in
            enumerate([("north", 80), ("south", 60), ("east", 40)])}  # fmt: skip


@pytest.mark.parametrize("he", ["packed", "ckks"])
def test_encrypted_rounds_with_a_public_only_orchestrator(ray_local, namespace, three_silos, he: str) -> None:
    # Prepare
    silos, orchestrator = _start(namespace, three_silos, he=he)
    try:
        # Execute
        setup = ray.get(orchestrator.setup.remote())
        records = [ray.get(orchestrator.run_round.remote(r)) for r in (1, 2, 3)]
        final = ray.get(orchestrator.evaluate.remote())
        # Assert: the orchestrator holds parameters only and cannot decrypt
        assert ray.get(orchestrator.can_decrypt.remote()) is False
        public = ray.get(orchestrator.public_context.remote())
        if he == "ckks":
            import tenseal as ts

            context = ts.context_from(public)
            assert not context.is_private() and not context.has_galois_keys()
        else:
            assert len(public) < 200  # BFV encryption parameters only
        assert setup.codec["scheme"] == he and setup.n_parameters == (2 + 3) + 1
        assert all(sorted(r.participants) == ["east", "north", "south"] for r in records)
        assert records[0].bytes_down == 0 and records[1].bytes_down > 0
        assert records[0].incoming is not None and records[0].incoming.after_round == 0
        assert final.after_round == 3 and final.accuracy > 0.7
        assert final.auc is not None and final.auc > 0.8
    finally:
        _cleanup(silos, orchestrator)


def test_bad_silo_data_stops_setup_naming_the_silo(ray_local, namespace, three_silos, write_table) -> None:
    three_silos["west"] = write_table("west", synthetic_silo(30, seed=9).drop(columns=["x2"]))
    silos, orchestrator = _start(namespace, three_silos)
    try:
        with pytest.raises(SchemaMismatch) as caught:
            ray.get(orchestrator.setup.remote())
        assert caught.value.problems == ["silo 'west': lacks column(s) ['x2'] that the other silos have"]
    finally:
        _cleanup(silos, orchestrator)


def test_missing_file_stops_setup_naming_the_silo(ray_local, namespace, three_silos, tmp_path) -> None:
    three_silos["ghost"] = tmp_path / "missing.csv"
    silos, orchestrator = _start(namespace, three_silos)
    try:
        with pytest.raises(SchemaMismatch, match="silo 'ghost': data file .* does not exist on this node"):
            ray.get(orchestrator.setup.remote())
    finally:
        _cleanup(silos, orchestrator)


def test_a_killed_silo_is_left_out_and_the_round_goes_on(ray_local, namespace, three_silos) -> None:
    silos, orchestrator = _start(namespace, three_silos, min_silos=2)
    try:
        ray.get(orchestrator.setup.remote())
        ray.get(orchestrator.run_round.remote(1))
        ray.kill(silos["east"])
        record = ray.get(orchestrator.run_round.remote(2))
        assert sorted(record.participants) == ["north", "south"]
        (failure,) = record.failures
        assert failure.silo == "east" and "unavailable" in failure.reason
        ray.kill(silos["south"])
        with pytest.raises(RoundFailed) as caught:
            ray.get(orchestrator.run_round.remote(3))
        assert "only 1 silo(s) answered, min_silos is 2" in str(caught.value)
        assert {f.silo for f in caught.value.failures} == {"east", "south"}
    finally:
        _cleanup(silos, orchestrator)


def test_setup_failed_is_a_clean_domain_error(ray_local, namespace, write_table) -> None:
    # Prepare: silo "b" has a missing value in every row, and the pipeline drops such rows
    holes = synthetic_silo(30, seed=2).assign(x2=float("nan"))
    paths = {"a": write_table("a", synthetic_silo(30, seed=1)), "b": write_table("b", holes)}
    data = DataSpec(target="y", categorical=("color",), missing="drop")
    silo_cls = silo_actor(num_cpus=0.1)
    off = HEConfig(scheme="off")
    silos = {
        n: silo_cls.options(namespace=namespace).remote(SiloSpec(n, str(p), data, ModelSpec(), he=off))
        for n, p in paths.items()
    }
    settings = OrchestratorSettings(min_silos=1, round_timeout_s=60, he=off)
    orchestrator = ray.remote(num_cpus=0.1)(Orchestrator).remote(silos, FedAvg(), settings)
    try:
        # Execute
        with pytest.raises(SetupFailed) as caught:
            ray.get(orchestrator.setup.remote())
        # Assert: the domain error arrives whole, naming the step and the silo
        assert caught.value.step == "feature statistics (pass 1)"
        (failure,) = caught.value.failures
        assert failure.silo == "b"
        assert "only 0 rows" in failure.reason and "missing = 'drop' dropped 30" in failure.reason
    finally:
        _cleanup(silos, orchestrator)


def test_silo_never_hands_out_its_secret(ray_local, namespace, three_silos) -> None:
    """The key bundle a silo gives the orchestrator opens for no one but its peers."""
    silos, orchestrator = _start(namespace, three_silos)
    try:
        outsider = SealingKey.generate()
        publics = {n: ray.get(h.public_keys.remote()).sealing for n, h in silos.items()}
        bundle: KeyBundle = ray.get(silos["north"].generate_he_keys.remote(publics))
        assert set(bundle.sealed) == {"south", "east"}
        assert len(bundle.public_context) < 200
        for sealed in bundle.sealed.values():
            with pytest.raises(SealError):
                outsider.open(sealed, b"fedsilo/he-secret-context/south")
        with pytest.raises(SealError, match="does not open"):
            ray.get(silos["south"].install_he_keys.remote(bundle.sealed["east"]))
    finally:
        _cleanup(silos, orchestrator)


# -- silos that misbehave in rounds (honest during set-up) ----------------------------------


class Replaying(SiloWorker):
    """Sends round 1's signed update again in round 2."""

    def encode_staged(self, tag: str, bound: float) -> SignedUpdate:
        update = super().encode_staged(tag, bound)
        if tag.startswith("stats"):
            return update
        previous = getattr(self, "_previous", None)
        self._previous = update
        return previous or update


class Tampering(SiloWorker):
    """Swaps the payload after signing."""

    def encode_staged(self, tag: str, bound: float) -> SignedUpdate:
        update = super().encode_staged(tag, bound)
        if tag.startswith("stats"):
            return update
        forged = encode_weighted(
            self._require_codec(), [0.0] * update.item.payload.length, 1.0, bound=bound, tag=tag
        )
        return dataclasses.replace(update, item=forged)


class Impostor(SiloWorker):
    """Signs with a key it never registered."""

    def encode_staged(self, tag: str, bound: float) -> SignedUpdate:
        update = super().encode_staged(tag, bound)
        return (
            update if tag.startswith("stats") else UpdateSigner.generate().sign(self.name, tag, update.item)
        )


class Unsigned(SiloWorker):
    def encode_staged(self, tag: str, bound: float) -> SignedUpdate:
        update = super().encode_staged(tag, bound)
        return update if tag.startswith("stats") else dataclasses.replace(update, signature=b"")


class SignsItsOwnPayload(SiloWorker):
    """Honest in set-up; in rounds, signs (properly) a payload of `forge`'s making."""

    def encode_staged(self, tag: str, bound: float) -> SignedUpdate:
        if tag.startswith("stats"):
            return super().encode_staged(tag, bound)
        assert self._staged is not None
        values, weight, _ = self._staged
        return self._signer.sign(self.name, tag, self.forge(np.asarray(values), weight, bound, tag))

    def forge(self, values: np.ndarray, weight: float, bound: float, tag: str) -> WeightedPayload:
        raise NotImplementedError


class WrongKey(SignsItsOwnPayload):
    """Encrypts its round updates under an HE key of its own."""

    def forge(self, values: np.ndarray, weight: float, bound: float, tag: str) -> WeightedPayload:
        stranger = PackedKeys.generate(self.spec.he.packed).codec()
        return encode_weighted(stranger, values, weight, bound=bound, tag=tag)


class NegativeWeight(SignsItsOwnPayload):
    """Claims weight -1: in a weighted mean it would subtract itself."""

    def forge(self, values: np.ndarray, weight: float, bound: float, tag: str) -> WeightedPayload:
        payload = self._require_codec().encode(-values, bound=bound, tag=tag)
        return WeightedPayload(payload, -1.0)  # encode_weighted itself refuses the weight


def test_bad_updates_are_refused_by_name_and_the_round_goes_on(ray_local, namespace, write_table) -> None:
    # Prepare: two honest silos and five that misbehave once rounds start
    kinds = {"replay": Replaying, "tamper": Tampering, "impostor": Impostor, "unsigned": Unsigned,
             "wrongkey": WrongKey, "negative": NegativeWeight}  # fmt: skip
    names = ["honest-a", "honest-b", *kinds]
    paths = {name: write_table(name, synthetic_silo(40, seed=i)) for i, name in enumerate(names)}
    silos, orchestrator = _start(namespace, paths, min_silos=2, classes=kinds)
    try:
        ray.get(orchestrator.setup.remote())
        # Execute
        first = ray.get(orchestrator.run_round.remote(1))
        second = ray.get(orchestrator.run_round.remote(2))
        # Assert
        assert sorted(first.participants) == ["honest-a", "honest-b", "replay"]
        assert sorted(second.participants) == ["honest-a", "honest-b"]
        reasons = {f.silo: f.reason for f in second.failures}
        assert "made for 'round-1/replay', expected 'round-2/replay' (replayed?)" in reasons["replay"]
        assert "bad signature" in reasons["tamper"] and "bad signature" in reasons["impostor"]
        assert "not signed" in reasons["unsigned"]
        assert "encrypted under another key" in reasons["wrongkey"]
        assert "aggregation weight -1.0 is not a positive finite number" in reasons["negative"]
        assert "negative" not in first.participants
        final = ray.get(orchestrator.evaluate.remote())
        assert final.accuracy > 0.6
    finally:
        _cleanup(silos, orchestrator)


def test_provisioned_keys_are_used_and_a_silo_with_other_keys_is_named(
    ray_local, namespace, three_silos, tmp_path
) -> None:
    # Prepare: one key set for the federation, a second one that "east" was given by mistake
    config = HEConfig(scheme="packed", packed=PackedParams(max_silos=3))
    secret, public = write_key_files(config, tmp_path / "keys")
    other_secret, _ = write_key_files(config, tmp_path / "other")
    provisioned = read_public_key_file(public, config)
    good = {name: secret for name in three_silos}
    silos, orchestrator = _start(namespace, three_silos, secrets=good, provisioned=provisioned)
    try:
        # Execute / Assert: the provisioned key set works end to end
        setup = ray.get(orchestrator.setup.remote())
        assert setup.codec["key_id"] == provisioned[1]
        assert len(ray.get(orchestrator.run_round.remote(1)).participants) == 3
    finally:
        _cleanup(silos, orchestrator)
    silos, orchestrator = _start(
        f"{namespace}-b", three_silos, secrets={**good, "east": other_secret}, provisioned=provisioned
    )
    try:
        with pytest.raises(SetupFailed) as caught:
            ray.get(orchestrator.setup.remote())
        assert caught.value.step == "checking provisioned HE keys"
        assert [f.silo for f in caught.value.failures] == ["east"]
    finally:
        _cleanup(silos, orchestrator)


class Boosting(SiloWorker):
    """Sends its change of the model x1000 and unclipped, from round 1 on."""

    def fit(self, ins: FitIns) -> FitRes:
        self._load_global(ins.global_payload)
        start = get_flat(self._model)
        res = super().fit(ins)
        if self._staged is not None:
            values, weight, exact = self._staged
            self._staged = (start + 1000.0 * (values - start), weight, exact)
        return res


def test_plaintext_orchestrator_bounds_every_update_from_round_one(ray_local, namespace, three_silos) -> None:
    # Prepare: FedProx in plaintext; "east" boosts its update; the orchestrator clips around
    # the initial model in round 1 (asked of a silo) and around the global model after that.
    bound = 0.5
    strategy = FedProx(lr=0.1, mu=0.1, clip_norm=bound)
    silos, orchestrator = _start(
        namespace, three_silos, he="off", strategy=strategy, classes={"east": Boosting}
    )
    codec = PlainCodec()
    try:
        setup = ray.get(orchestrator.setup.remote())
        assert setup.codec == {"scheme": "off", "secagg": "off"}
        initial = codec.decode(ray.get(silos["north"].initial_weights.remote()))
        models = [initial]
        # Execute
        for r in (1, 2):
            record = ray.get(orchestrator.run_round.remote(r))
            assert sorted(record.participants) == ["east", "north", "south"] and record.failures == ()
            models.append(codec.decode(ray.get(orchestrator.state.remote()).global_payload))
        # Assert: the global model moved at most the bound each round (a mean of clipped changes)
        for before, after in zip(models, models[1:], strict=False):
            assert 0 < np.linalg.norm(after - before) <= bound + 1e-9
    finally:
        _cleanup(silos, orchestrator)

"""Large encrypted updates streamed in pieces, on real Ray and real silos: the same round as a
whole upload, and a silo that dies or forges mid-stream left out while the others send again;
the server-step leader's vectors streamed back the same way."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest
import ray

from orchestrator.actor import Orchestrator
from orchestrator.records import OrchestratorState, RoundRecord
from orchestrator.settings import OrchestratorSettings
from orchestrator.strategies import FedAvg, FedOpt, Strategy
from privacy.codec import Payload
from privacy.params import HEConfig, PackedParams
from privacy.signing import SignedUpdate
from silo.actor import SiloWorker, silo_actor
from silo.config import DataSpec, ModelSpec, SiloSpec
from silo.messages import ServerStepIns, StoredPayload
from tests.conftest import synthetic_silo

DATA = DataSpec(target="y", categorical=("color",))
MODEL = ModelSpec(kind="mlp", hidden=(512, 64))  # about 36,000 parameters: 3 pieces of 12,288
SMALL_PIECES = 1  # rounded up to one ciphertext (12,288 values at 3 lanes)


class DiesMidStream(SiloWorker):
    """Its process exits when asked for the second piece of its first upload."""

    def encode_staged_piece(self, tag: str, bound: float, pieces: int, index: int, n: int) -> SignedUpdate:
        if index == 1:
            os._exit(1)
        return super().encode_staged_piece(tag, bound, pieces, index, n)


class ForgesSecondPiece(SiloWorker):
    """Sends its second piece with a byte changed after signing (tampered in transit)."""

    def encode_staged_piece(self, tag: str, bound: float, pieces: int, index: int, n: int) -> SignedUpdate:
        piece = super().encode_staged_piece(tag, bound, pieces, index, n)
        return self.forged(piece) if index == 1 else piece

    @staticmethod
    def forged(piece: SignedUpdate) -> SignedUpdate:
        payload = piece.item.payload
        first = bytes([payload.chunks[0][0] ^ 1]) + payload.chunks[0][1:]
        forged = dataclasses.replace(payload, chunks=(first, *payload.chunks[1:]))
        return dataclasses.replace(piece, item=dataclasses.replace(piece.item, payload=forged))


class ForgesLeaderPiece(SiloWorker):
    """As the server-step leader, changes a byte of its second piece after signing it."""

    def server_step_pieces(self, ins: ServerStepIns, piece_values: int) -> Any:
        for index, piece in enumerate(super().server_step_pieces(ins, piece_values)):
            yield ForgesSecondPiece.forged(piece) if index == 1 else piece


def _federation(
    namespace: str, paths: dict[str, Path], classes: dict[str, type[SiloWorker]], piece_values: int,
    strategy: Strategy | None = None,
) -> tuple[dict[str, Any], Any]:  # fmt: skip
    he = HEConfig(packed=PackedParams(max_silos=len(paths)))
    silos = {
        name: silo_actor(classes.get(name), num_cpus=0.1)
        .options(name=f"silo:{name}", namespace=namespace)
        .remote(SiloSpec(name, str(path), DATA, MODEL, he=he))
        for name, path in paths.items()
    }
    settings = OrchestratorSettings(
        min_silos=2, round_timeout_s=60.0, retry_wait_s=1.0, he=he, piece_values=piece_values, piece_window=2
    )
    orchestrator = ray.remote(num_cpus=0.1)(Orchestrator).remote(silos, strategy or FedAvg(lr=0.1), settings)
    ray.get(orchestrator.setup.remote())
    return silos, orchestrator


def _rounds(
    namespace: str, paths: dict[str, Path], piece_values: int, strategy: Strategy | None = None,
    **classes: Any,
) -> tuple[list[RoundRecord], OrchestratorState, OrchestratorState]:  # fmt: skip
    """Two rounds; the orchestrator's state after them, as it holds it and with bytes fetched (a
    stored sum's pieces go with the orchestrator that put them: fetched before it stops)."""
    silos, orchestrator = _federation(namespace, paths, classes, piece_values, strategy)
    try:
        records = [ray.get(orchestrator.run_round.remote(r)) for r in (1, 2)]
        state: OrchestratorState = ray.get(orchestrator.state.remote())
        return records, state, state.fetched()
    finally:
        for handle in [*silos.values(), orchestrator]:
            ray.kill(handle)


@pytest.fixture
def paths(write_table) -> dict[str, Path]:
    names = ["north", "south", "east", "west"]
    return {name: write_table(name, synthetic_silo(60, seed=i)) for i, name in enumerate(names)}


def test_a_streamed_round_moves_and_trains_as_a_whole_upload(ray_local, namespace, paths) -> None:
    # Prepare: three silos, once streaming in pieces of one ciphertext, once whole
    three = {name: paths[name] for name in ["north", "south", "east"]}
    # Execute
    streamed, stored, fetched_state = _rounds(namespace, three, SMALL_PIECES)
    whole, kept, _ = _rounds(namespace + "-whole", three, 0)
    # Assert: the streamed sum stays in the object store (the orchestrator holds references);
    # fetched, it is a payload like the whole one, for a checkpoint
    assert isinstance(stored.global_payload, StoredPayload) and len(stored.global_payload.pieces) == 3
    fetched = fetched_state.global_payload
    assert isinstance(fetched, Payload) and isinstance(kept.global_payload, Payload)
    assert fetched.length == kept.global_payload.length and fetched.nbytes == kept.global_payload.nbytes
    # ... every silo in both; the same bytes up; round 2 scores the same global model
    for records in (streamed, whole):
        assert [len(r.participants) for r in records] == [3, 3], [r.failures for r in records]
    assert [r.bytes_up for r in streamed] == [r.bytes_up for r in whole]
    a, b = streamed[1].incoming, whole[1].incoming
    assert a is not None and b is not None
    assert abs(a.loss - b.loss) < 1e-3 and a.accuracy == pytest.approx(b.accuracy, abs=0.02)


def test_silos_that_die_or_forge_mid_stream_are_left_out_and_the_rest_send_again(
    ray_local, namespace, paths
) -> None:
    # Prepare: east dies after its first piece, west forges its second
    classes = {"east": DiesMidStream, "west": ForgesSecondPiece}
    # Execute
    (first, second), _, _ = _rounds(namespace, paths, SMALL_PIECES, **classes)
    # Assert: round 1 completes with the two honest silos, naming both others and why
    assert sorted(first.participants) == ["north", "south"]
    reasons = {f.silo: f.reason for f in first.failures}
    assert "unavailable" in reasons["east"] or "died" in reasons["east"], reasons
    assert "bad signature" in reasons["west"], reasons
    assert first.rejected == ("west",)
    # ... and west, still forging, is refused again in round 2 while the round completes
    assert sorted(second.participants) == ["north", "south"]


def test_the_server_step_leader_streams_its_vectors_and_a_forging_leader_is_replaced(
    ray_local, namespace, paths
) -> None:
    # Prepare: FedAdam (the leader re-encrypts the new model, m and v), streamed and whole; in
    # the streamed run the first leader by name (east) forges its second piece
    three = {name: paths[name] for name in ["north", "south", "east"]}
    adam = FedOpt(name="fedadam", local_epochs=2, lr=0.1, server_lr=0.05, tau=1e-3)
    # Execute
    streamed, stored, fetched_state = _rounds(namespace, three, SMALL_PIECES, adam, east=ForgesLeaderPiece)
    whole, kept, _ = _rounds(namespace + "-whole", three, 0, adam)
    # Assert: every vector stays in the object store, fetched for a checkpoint like the whole ones
    vectors = [stored.global_payload, *stored.server_state]
    assert len(vectors) == 3 and all(isinstance(v, StoredPayload) and len(v.pieces) > 1 for v in vectors)
    assert [v.terms for v in vectors] == [(f"round-2/server/{n}",) for n in ("global", "m", "v")]
    fetched = [fetched_state.global_payload, *fetched_state.server_state]
    assert [v.nbytes for v in fetched] == [v.nbytes for v in [kept.global_payload, *kept.server_state]]
    # ... east is named as a leader that failed; north made the step; both runs train alike
    for record in streamed:
        assert len(record.participants) == 3
        assert [(f.silo, "bad signature" in f.reason) for f in record.failures] == [("east", True)]
    a, b = streamed[1].incoming, whole[1].incoming
    assert a is not None and b is not None
    assert abs(a.loss - b.loss) < 1e-3 and a.accuracy == pytest.approx(b.accuracy, abs=0.02)

"""The server-step leader: one silo applies the server optimizer to the decrypted average.

FedAdam/FedYogi/FedAdagrad need a step that reads the round's average, which only silos
can decrypt. Every silo would compute the same deterministic step, so one of them (the
first accepted silo by name; if it fails, the next) does it and re-encrypts the new global
model and the optimizer state (m, v), each signed under its own tag
``round-<r>/server/<name>``. The orchestrator checks the signatures, key and lengths as
for updates and keeps the ciphertexts: it still sees nothing, and checkpoints carry the
encrypted state, so a resumed run or a restarted silo needs nothing a silo kept.

A vector larger than one piece (``piece_values``) comes back as a stream of signed pieces
(`SiloWorker.server_step_pieces`) that the orchestrator checks one at a time and puts into
Ray's object store, as it does with a streamed sum: it never holds a whole vector. Leaders that
cannot stream (a remote site's proxy) send whole vectors.

    orchestrator.actor.Orchestrator._run_round -> leader_step(...)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayError

from orchestrator.errors import SiloFailure
from orchestrator.pieces import stop_stream
from privacy.codec import Codec, CodecError, Payload, check_payload
from privacy.pieces import piece_ranges, piece_tag
from privacy.signing import SignatureError, SignedUpdate, verify_update
from silo.messages import ServerStepIns, ServerStepRes, StoredPayload
from silo.server_opt import server_vectors


@dataclass(frozen=True)
class LeaderResult:
    global_payload: Payload | StoredPayload | None  # None: no silo could make the step
    state: tuple[Payload | StoredPayload, ...]
    leader: str
    bytes_up: int
    failures: tuple[SiloFailure, ...]


def _checked(
    res: ServerStepRes, name: str, ins: ServerStepIns, signing: bytes, codec: Codec, length: int
) -> tuple[Payload, tuple[Payload, ...]]:
    names = [vector for vector, _ in server_vectors(ins.opt)]
    updates: tuple[SignedUpdate, ...] = (res.global_update, *res.state)
    if len(updates) != len(names):
        raise CodecError(f"server step returned {len(updates)} vectors, expected {len(names)}")
    payloads = []
    for vector, update in zip(names, updates, strict=True):
        item = verify_update(update, name, f"round-{ins.round}/server/{vector}", signing)
        check_payload(codec.name, item.payload, length, key_id=codec.key_id)
        payloads.append(item.payload)
    return payloads[0], tuple(payloads[1:])


@dataclass(frozen=True)
class Pieces:
    """How the leader's vectors stream: pieces of ``values`` values, at most ``window`` ahead."""

    values: int
    window: int


def _streamed(
    silo: Any, ins_ref: Any, name: str, ins: ServerStepIns, signing: bytes, codec: Codec, length: int,
    pieces: Pieces, timeout: float,
) -> tuple[StoredPayload, tuple[StoredPayload, ...]]:  # fmt: skip
    """The leader's vectors read piece by piece, each checked and put into the object store."""
    deadline = time.monotonic() + timeout
    stream = silo.server_step_pieces.options(_generator_backpressure_num_objects=pieces.window).remote(
        ins_ref, pieces.values
    )
    vectors = []
    try:
        for vector, exact in server_vectors(ins.opt):
            tag = f"round-{ins.round}/server/{vector}"
            ranges = piece_ranges(length, pieces.values, codec.chunk_values(exact))
            stored, nbytes, terms = [], 0, tuple[str, ...]()
            count = len(ranges)
            for index, (a, b) in enumerate(ranges):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not ray.wait([stream], timeout=remaining)[0]:
                    raise GetTimeoutError(f"no piece {index + 1} of {tag} within {timeout:.0f}s")
                try:
                    update = ray.get(next(stream))
                except StopIteration as err:
                    raise CodecError(f"the stream ended at piece {index + 1} of {count} of {tag}") from err
                item = verify_update(update, name, piece_tag(tag, index, count), signing)
                check_payload(codec.name, item.payload, b - a, key_id=codec.key_id)
                stored.append(ray.put(item.payload))
                nbytes, terms = nbytes + item.payload.nbytes, item.payload.terms
            vectors.append(StoredPayload(tuple(stored), length, terms, nbytes))
    except BaseException:
        stop_stream(stream)
        raise
    return vectors[0], tuple(vectors[1:])


def leader_step(
    silos: dict[str, Any],
    candidates: list[str],
    ins: ServerStepIns,
    signing: dict[str, bytes],
    codec: Codec,
    length: int,
    timeout: float,
    reason: Callable[[BaseException], str],
    pieces: Pieces | None = None,
) -> LeaderResult:
    """Ask ``candidates`` in name order until one returns a valid, signed step; with ``pieces``,
    vectors longer than one piece stream from leaders that can stream."""
    failures: list[SiloFailure] = []
    ins_ref = ray.put(ins)
    for name in sorted(candidates):
        silo = silos[name]
        try:
            new_global: Payload | StoredPayload
            state: tuple[Payload | StoredPayload, ...]
            if pieces is not None and length > pieces.values and hasattr(silo, "server_step_pieces"):
                key = signing[name]
                new_global, state = _streamed(silo, ins_ref, name, ins, key, codec, length, pieces, timeout)
            else:
                res: ServerStepRes = ray.get(silo.server_step.remote(ins_ref), timeout=timeout)
                new_global, state = _checked(res, name, ins, signing[name], codec, length)
        except (RayError, CodecError, SignatureError) as err:
            failures.append(SiloFailure(name, f"server step failed: {reason(err)}"))
            continue
        nbytes = new_global.nbytes + sum(p.nbytes for p in state)
        return LeaderResult(new_global, state, name, nbytes, tuple(failures))
    return LeaderResult(None, (), "", 0, tuple(failures))

"""The server-step leader: one silo applies the server optimizer to the decrypted average.

FedAdam/FedYogi/FedAdagrad need a step that reads the round's average, which only silos
can decrypt. Every silo would compute the same deterministic step, so one of them (the
first accepted silo by name; if it fails, the next) does it and re-encrypts the new global
model and the optimizer state (m, v), each signed under its own tag
``round-<r>/server/<name>``. The orchestrator checks the signatures, key and lengths as
for updates and keeps the ciphertexts: it still sees nothing, and checkpoints carry the
encrypted state, so a resumed run or a restarted silo needs nothing a silo kept.

    orchestrator.actor.Orchestrator._run_round -> leader_step(...)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayError

from orchestrator.errors import SiloFailure
from privacy.codec import Codec, CodecError, Payload, check_payload
from privacy.signing import SignatureError, SignedUpdate, verify_update
from silo.messages import ServerStepIns, ServerStepRes, StoredPayload


@dataclass(frozen=True)
class LeaderResult:
    global_payload: Payload | StoredPayload | None  # None: no silo could make the step
    state: tuple[Payload, ...]
    leader: str
    bytes_up: int
    failures: tuple[SiloFailure, ...]


def _checked(
    res: ServerStepRes, name: str, ins: ServerStepIns, signing: bytes, codec: Codec, length: int
) -> tuple[Payload, tuple[Payload, ...]]:
    names = ("global", *(ins.opt.state_names if ins.opt is not None else ()))
    updates: tuple[SignedUpdate, ...] = (res.global_update, *res.state)
    if len(updates) != len(names):
        raise CodecError(f"server step returned {len(updates)} vectors, expected {len(names)}")
    payloads = []
    for vector, update in zip(names, updates, strict=True):
        item = verify_update(update, name, f"round-{ins.round}/server/{vector}", signing)
        check_payload(codec.name, item.payload, length, key_id=codec.key_id)
        payloads.append(item.payload)
    return payloads[0], tuple(payloads[1:])


def leader_step(
    silos: dict[str, Any],
    candidates: list[str],
    ins: ServerStepIns,
    signing: dict[str, bytes],
    codec: Codec,
    length: int,
    timeout: float,
    reason: Callable[[BaseException], str],
) -> LeaderResult:
    """Ask ``candidates`` in name order until one returns a valid, signed step."""
    failures: list[SiloFailure] = []
    ins_ref = ray.put(ins)
    for name in sorted(candidates):
        try:
            res: ServerStepRes = ray.get(silos[name].server_step.remote(ins_ref), timeout=timeout)
            new_global, state = _checked(res, name, ins, signing[name], codec, length)
        except (RayError, CodecError, SignatureError) as err:
            failures.append(SiloFailure(name, f"server step failed: {reason(err)}"))
            continue
        nbytes = new_global.nbytes + sum(p.nbytes for p in state)
        return LeaderResult(new_global, state, name, nbytes, tuple(failures))
    return LeaderResult(None, (), "", 0, tuple(failures))

"""Collecting a large encrypted update as a stream of pieces (`privacy.pieces`).

Each silo's `encode_staged_pieces` is a Ray streaming generator: it encrypts piece i + 1 while
the orchestrator adds piece i, and Ray's backpressure (``window`` pieces not yet read) stops a
fast silo from running ahead. The orchestrator reads no silo more than ``window`` pieces ahead
of the slowest one still sending, so it holds running sums for at most about ``window`` pieces
whatever the model's size; a finished piece is serialized once, in the compact wire form, and
put into Ray's object store at once: the sum is a `StoredPayload` of references, which silos
fetch, so the orchestrator never holds the whole sum either.

A silo that fails before its first piece is simply left out. One that fails mid-stream has
pieces in the sums that cannot be taken out again: the pass is abandoned and the others, whose
updates are still staged, send theirs again under a new tag (a new encoding, a new dither).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import RayError

from orchestrator.calls import failure_reason
from orchestrator.errors import SiloFailure
from privacy.aggregate import WeightedPayload, check_weight
from privacy.codec import Codec, CodecError, Payload, check_payload
from privacy.pieces import PieceSum, piece_ranges, piece_tag
from privacy.signing import SignatureError, verify_update
from silo.messages import StoredPayload

logger = logging.getLogger(__name__)


@dataclass
class Streamed:
    """The outcome of a streamed sum. Shaped like the strategies' aggregators (``weight``,
    ``count``, ``mean``) so that a round treats it as one; it is finished already."""

    payload: StoredPayload | None = None  # Enc(mean), its pieces in the object store; None: no sum
    weight: float = 0.0
    count: int = 0
    accepted: list[str] = field(default_factory=list)
    failures: list[SiloFailure] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    late: list[str] = field(default_factory=list)
    bytes_up: int = 0
    add_seconds: float = 0.0
    passes: int = 0
    most_open: int = 0  # the most pieces held as running sums at once

    def add(self, item: WeightedPayload) -> None:
        raise TypeError("a streamed sum is finished piece by piece; nothing is added to it afterwards")

    def mean(self) -> StoredPayload:
        if self.payload is None:
            raise ValueError("no complete sum was collected")
        return self.payload


@dataclass(frozen=True)
class StreamPlan:
    """What every pass of one streamed sum shares."""

    phase: str  # "round-3": silo n signs piece i of k for "round-3/n#i/k"
    bound: float
    length: int
    piece_values: int
    window: int
    codec: Codec
    signing: dict[str, bytes]  # silo -> Ed25519 public key
    deadline: float  # time.monotonic()


def collect_pieces(
    silos: dict[str, Any], names: list[str], plan: StreamPlan, on_add: Callable[[], None] = lambda: None
) -> Streamed:
    """Stream every named silo's staged update in pieces and add them; passes again, without
    the silos that failed, while a failure mid-stream spoils a pass and time is left."""
    out = Streamed()
    members = list(names)
    for attempt in range(1, len(names) + 1):
        phase = plan.phase if attempt == 1 else f"{plan.phase}.{attempt}"
        survivors = _one_pass(silos, members, phase, plan, out, on_add)
        out.passes = attempt
        if out.payload is not None or not survivors or time.monotonic() >= plan.deadline:
            break
        logger.warning("%s: a silo failed mid-stream; %d silos send again", plan.phase, len(survivors))
        members = survivors
    return out


def _one_pass(
    silos: dict[str, Any], members: list[str], phase: str, plan: StreamPlan, out: Streamed,
    on_add: Callable[[], None],
) -> list[str]:  # fmt: skip
    """One pass; sets ``out.payload`` when it completes. Returns the silos that can send again
    (empty when the pass completed or nobody is left)."""
    ranges = piece_ranges(plan.length, plan.piece_values)
    count = len(ranges)
    streams = {
        silos[name]
        .encode_staged_pieces.options(_generator_backpressure_num_objects=plan.window)
        .remote(f"{phase}/{name}", plan.bound, plan.piece_values, plan.length): name
        for name in members
    }
    sums = PieceSum(plan.codec, count)
    stored: list[Any] = []  # object refs of the finished pieces
    stored_bytes = 0
    terms: tuple[str, ...] = ()

    def keep(finished: list[Payload]) -> None:  # into the object store: we hold references only
        nonlocal stored_bytes, terms
        for piece in finished:
            stored.append(ray.put(piece))
            stored_bytes, terms = stored_bytes + piece.nbytes, tuple(sorted(piece.terms))

    sent = dict.fromkeys(members, 0)  # pieces added, by silo
    weights: dict[str, float] = {}
    contributors = set(members)  # whose pieces every finished piece must hold
    spoiled = False  # a silo whose pieces are in the sums left mid-stream

    def leave(name: str, reason: str, rejected: bool = False) -> None:
        nonlocal spoiled
        contributors.discard(name)
        out.failures.append(SiloFailure(name, reason))
        if rejected:
            out.rejected.append(name)
        spoiled = spoiled or sent[name] > 0

    while streams and not spoiled:
        remaining = plan.deadline - time.monotonic()
        if remaining <= 0:
            break
        slowest = min(sent[name] for name in streams.values())
        waiting = [s for s, name in streams.items() if sent[name] < slowest + plan.window]
        ready: list[Any] = ray.wait(waiting, num_returns=1, timeout=remaining)[0]  # streams
        for stream in ready:
            name = streams[stream]
            try:
                ref = next(stream)
            except StopIteration:  # a silo that sent fewer pieces than its update has
                del streams[stream]
                leave(name, f"update rejected: its stream ended after {sent[name]} of {count} pieces", True)
                continue
            started = time.perf_counter()
            try:
                index = sent[name]
                update = ray.get(ref)
                tag = piece_tag(f"{phase}/{name}", index, count)
                item = verify_update(update, name, tag, plan.signing[name])
                first, last = ranges[index]
                check_payload(plan.codec.name, item.payload, last - first, key_id=plan.codec.key_id)
                check_weight(item.weight)
                if weights.setdefault(name, item.weight) != item.weight:
                    raise CodecError(f"piece {index + 1} has weight {item.weight}, piece 1 {weights[name]}")
                sums.add(index, name, item.payload)
                on_add()
            except RayError as err:
                stop_stream(streams.pop(stream))
                leave(name, failure_reason(err))
                continue
            except (CodecError, SignatureError, ValueError) as err:  # a bad piece: refused, named
                stop_stream(streams.pop(stream))
                leave(name, f"update rejected: {failure_reason(err)}", True)
                continue
            finally:
                out.add_seconds += time.perf_counter() - started
            sent[name] += 1
            out.bytes_up += item.payload.nbytes
            if sent[name] == count:
                del streams[stream]  # all its pieces are in (the generator ends on its own)
            out.most_open = max(out.most_open, sums.open)
            if contributors and contributors <= weights.keys():  # the mean's factor is known
                keep(sums.finish(contributors, 1.0 / sum(weights[c] for c in contributors)))
    for stream, name in streams.items():
        stop_stream(stream)
        if not spoiled:  # the deadline passed with this silo still sending
            contributors.discard(name)
            out.late.append(name)
            spoiled = sent[name] > 0
    if spoiled:
        return [name for name in members if name in contributors]
    if not contributors:
        return []
    keep(sums.finish(contributors, 1.0 / sum(weights[c] for c in contributors)))
    if len(stored) != count:
        raise AssertionError(f"{len(stored)} of {count} pieces finished with every contributor done")
    out.payload = StoredPayload(tuple(stored), plan.length, terms, stored_bytes)
    out.accepted = [name for name in members if name in contributors]
    out.weight = sum(weights[c] for c in contributors)
    out.count = len(contributors)
    return []


def stop_stream(stream: Any) -> None:
    """Cancel a silo's stream we no longer read (it would otherwise encrypt to the end)."""
    try:
        ray.cancel(stream)
    except Exception as err:  # already finished, or its silo is gone
        logger.debug("cancelling a stream: %s", err)

"""The orchestrator's side of secure aggregation: the deal and unmask steps around a sum.

`privacy.secagg` holds the protocol; here are the calls to silos and what a failure
means. Around one federated sum (a round, a statistics pass):

    masked = deal(silos, session, staged, threshold, sealing, key, deadline)   # shares dealt
    ... encode_staged(tag, bound, masked.round) on masked.members; add as they arrive ...
    masks = unmask(silos, masked, accepted, key, deadline)    # signed sets -> rebuilt masks

A silo that does not deal is simply not a member; one that dealt but whose upload is
missing, late or refused is "dropped" (its pair masks with the survivors are rebuilt);
one that uploaded and then does not answer the unmask step costs nothing while at least
``threshold`` survivors answer. Fewer survivors than the threshold: `SecAggError`,
which the caller turns into a failed round (retried) or a failed set-up.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from orchestrator.calls import arrivals, failure_reason
from orchestrator.errors import SiloFailure
from privacy.masking import Mask
from privacy.secagg import (
    Dealt,
    MaskDeal,
    MaskRound,
    OrchestratorKey,
    SecAggError,
    UnmaskShares,
    default_threshold,
    quorum,
    unmask_masks,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Masked:
    """A session whose shares are dealt: encode with ``round`` for ``round.members``."""

    round: MaskRound
    threshold: int
    dealt: dict[str, Dealt]
    failures: tuple[SiloFailure, ...]

    @property
    def members(self) -> tuple[str, ...]:
        return self.round.members


def threshold_for(members: int, configured: int | None) -> int:
    """The configured threshold (``[privacy] threshold``), or floor(n/2)+1 of this sum's members."""
    return configured if configured is not None else default_threshold(members)


def deal(
    silos: dict[str, Any],
    session: str,
    staged: list[str],
    configured: int | None,
    sealing: dict[str, bytes],
    key: OrchestratorKey,
    deadline: float,
) -> Masked:
    """Ask every silo that staged to deal its shares; the members are those that did."""
    members = tuple(sorted(staged))
    threshold = threshold_for(len(members), configured)
    if len(members) < quorum(threshold):
        raise SecAggError(
            f"session {session}: {len(members)} silos staged, secure aggregation needs "
            f"{quorum(threshold)} (threshold {threshold})"
        )
    ins = MaskDeal(session, members, threshold, {m: sealing[m] for m in members}, key.public_bytes())
    refs = {silos[name].deal_masks.remote(ins): name for name in members}
    dealt: dict[str, Dealt] = {}
    failures: list[SiloFailure] = []
    for name, res in arrivals(refs, deadline):
        if isinstance(res, BaseException):
            failures.append(SiloFailure(name, f"did not deal its shares: {failure_reason(res)}"))
        elif res.silo != name or res.session != session or set(res.shares) != set(members) - {name}:
            failures.append(SiloFailure(name, "dealt shares for another session or other members"))
        else:
            dealt[name] = res
    failures += [SiloFailure(name, "did not deal its shares in time") for name in refs.values()]
    if len(dealt) < quorum(threshold):
        reasons = "; ".join(f"{f.silo}: {f.reason}" for f in failures)
        raise SecAggError(
            f"session {session}: {len(dealt)} of {len(members)} silos dealt their shares, the threshold "
            f"is {threshold} ({reasons})"
        )
    return Masked(MaskRound(session, tuple(sorted(dealt))), threshold, dealt, tuple(failures))


def unmask(
    silos: dict[str, Any],
    masked: Masked,
    accepted: list[str],
    key: OrchestratorKey,
    deadline: float,
) -> tuple[tuple[Mask, ...], list[SiloFailure]]:
    """Sign the survivor and dropped sets, collect shares, rebuild the masks left in the sum."""
    session, threshold = masked.round.session, masked.threshold
    survivors = tuple(sorted(accepted))
    dropped = tuple(m for m in masked.members if m not in accepted)
    if len(survivors) < quorum(threshold):
        raise SecAggError(
            f"session {session}: {len(survivors)} uploads summed, the threshold is {threshold} "
            f"(at most {len(masked.members) - threshold} of {len(masked.members)} may drop out)"
        )
    started = time.perf_counter()
    refs = {}
    for name in survivors:
        relayed = {d: masked.dealt[d].shares[name] for d in masked.members if d != name}
        refs[silos[name].unmask.remote(key.request(session, survivors, dropped, relayed))] = name
    answers: list[UnmaskShares] = []
    failures: list[SiloFailure] = []
    for name, res in arrivals(refs, deadline):
        if isinstance(res, BaseException):
            failures.append(SiloFailure(name, f"unmask step: {failure_reason(res)}"))
        else:
            answers.append(res)
    failures += [SiloFailure(name, "unmask step: no answer in time") for name in refs.values()]
    masks = unmask_masks(session, survivors, dropped, answers, threshold)
    logger.info(
        "session %s: %d survivors, %d dropped, %d answered the unmask step (%.2f s)",
        session, len(survivors), len(dropped), len(answers), time.perf_counter() - started,
    )  # fmt: skip
    return masks, failures

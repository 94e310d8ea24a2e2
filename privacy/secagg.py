"""Pairwise double masking (Bonawitz et al. 2017, as in SecAgg+) inside the encrypted sum.

Every federated sum with ``[privacy] secagg = "pairwise"`` goes in three steps around
the existing two (stage, encode):

1. **deal** (`MaskingSession.deal`): for the session's members (the silos that staged),
   a silo draws a fresh self-mask seed b_i, derives a seed s_ij with every peer from
   their X25519 keys (HKDF-SHA256 bound to the federation, the pair and the session),
   and Shamir-shares the vector [b_i, s_ij...] t-of-n. Each peer's share is encrypted
   with a key derived from the pair key (ChaCha20-Poly1305); the orchestrator relays it
   and cannot open it.
2. **mask** (`MaskingSession.masks`): encoding for the members that dealt, a silo adds
   PRG(b_i) and +PRG(s_ij) for each peer j after it (by name), -PRG(s_ij) for each peer
   before it, to its quantized integers mod the plain modulus, then encrypts.
   Pair masks cancel in the sum; a single upload, even decrypted, is uniform noise.
3. **unmask** (`MaskingSession.unmask`): the orchestrator signs the survivors (whose
   uploads it summed) and the dropped; each survivor checks the signature and the sets,
   refuses a second, different set for the session and fewer survivors than the
   threshold (or than 2), then returns its shares of the survivors' b_i and of the
   dropped silos' seeds with the survivors, never both kinds for one silo. `unmask_masks`
   rebuilds them: the signed masks that, subtracted after decryption, leave the exact sum.

A coalition of the orchestrator with fewer than t silos sees, of one silo, only masked
ciphertexts: it lacks b_i (t shares) or a pair seed with an honest survivor.

    python -m pytest tests/privacy/test_secagg.py -q
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from privacy.masking import SEED_BYTES, Mask
from privacy.sealing import SealingKey
from privacy.shamir import ShareError, combine, from_bytes, split, to_bytes

_RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw
_KEPT_SESSIONS = 8  # a retried unmask step finds its session; older rounds' seeds are dropped


class SecAggError(ValueError):
    """A masking step refused or impossible; the message names the session and the reason."""


def default_threshold(members: int) -> int:
    """floor(n/2) + 1: a majority of the session's members."""
    return members // 2 + 1


def quorum(threshold: int) -> int:
    """The fewest silos a masked sum may hold: the threshold, and never one honest silo alone."""
    return max(2, threshold)


@dataclass(frozen=True)
class MaskDeal:
    """The orchestrator's request to deal: who is in the session and their X25519 keys."""

    session: str  # unique per sum: "<run nonce>/<phase>/<attempt>"; a silo deals once per session
    members: tuple[str, ...]  # sorted; share points are positions + 1
    threshold: int
    sealing: Mapping[str, bytes]  # member -> X25519 public key (registered at set-up)
    orchestrator_key: bytes  # Ed25519: signs the survivor sets (pinned by each silo on first use)


@dataclass(frozen=True)
class Dealt:
    silo: str
    session: str
    shares: Mapping[str, bytes]  # recipient -> its encrypted share vector


@dataclass(frozen=True)
class MaskRound:
    """Encode masked for these members (those that dealt)."""

    session: str
    members: tuple[str, ...]


@dataclass(frozen=True)
class UnmaskRequest:
    session: str
    survivors: tuple[str, ...]  # whose uploads are in the sum
    dropped: tuple[str, ...]  # dealt, masked with, but not in the sum
    signature: bytes
    relayed: Mapping[str, bytes] = field(default_factory=dict)  # dealer -> share sent to this silo


@dataclass(frozen=True)
class UnmaskShares:
    silo: str
    session: str
    point: int
    self_masks: Mapping[str, list[int]]  # survivor -> [share of b]
    pair_seeds: Mapping[str, list[int]]  # dropped -> [share of s_dk for k in survivors, in order]


def sets_digest(session: str, survivors: Sequence[str], dropped: Sequence[str]) -> bytes:
    return repr(("fedsilo-secagg-unmask-v1", session, tuple(survivors), tuple(dropped))).encode()


class OrchestratorKey:
    """The orchestrator's Ed25519 key: it signs each unmask step's survivor and dropped sets."""

    def __init__(self) -> None:
        self._private = Ed25519PrivateKey.generate()

    def public_bytes(self) -> bytes:
        return self._private.public_key().public_bytes(*_RAW)

    def request(
        self, session: str, survivors: Sequence[str], dropped: Sequence[str], relayed: Mapping[str, bytes]
    ) -> UnmaskRequest:
        s, d = tuple(sorted(survivors)), tuple(sorted(dropped))
        return UnmaskRequest(session, s, d, self._private.sign(sets_digest(session, s, d)), dict(relayed))

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("OrchestratorKey holds a private key and must never be pickled")


def _hkdf(material: bytes, info: bytes, salt: bytes | None = None) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(material)


def sign_of(silo: str, peer: str) -> int:
    """+1 where ``silo`` sorts before ``peer``: the pair mask enters once each way and cancels."""
    return 1 if silo < peer else -1


@dataclass
class _Session:
    deal: MaskDeal
    self_seed: bytes
    pair_seeds: dict[str, bytes]  # peer -> s_ij
    share_keys: dict[str, bytes]  # peer -> key its share to us / ours to it is encrypted with
    own_share: list[int]
    masked_with: tuple[str, ...] | None = None
    answered: tuple[tuple[str, ...], tuple[str, ...]] | None = None


class MaskingSession:
    """A silo's side of secure aggregation. Holds its X25519 key's agreements and its seeds;
    lives in the silo process (never pickled)."""

    def __init__(self, silo: str, sealing: SealingKey) -> None:
        self.silo = silo
        self._sealing = sealing
        self._sessions: dict[str, _Session] = {}  # the latest few; older ones are forgotten
        self._used: set[str] = set()  # every session ever dealt: seeds are never derived twice
        self._orchestrator_key: bytes | None = None

    def _pair_key(self, peer: str, public: bytes, federation: str) -> bytes:
        shared = self._sealing.agree(public)
        pair = "|".join(sorted((self.silo, peer))).encode()
        return _hkdf(shared, b"fedsilo-secagg-pair-v1|" + pair, salt=federation.encode())

    def trust(self, key: bytes) -> bool:
        """Pin the orchestrator's signing key (at set-up; a replaced orchestrator sets up again).
        Returns whether it differs from the key pinned before (the silo logs that)."""
        changed = self._orchestrator_key is not None and key != self._orchestrator_key
        self._orchestrator_key = key
        return changed

    def _pin(self, key: bytes) -> None:
        if self._orchestrator_key is None:
            self._orchestrator_key = key
        elif key != self._orchestrator_key:
            raise SecAggError(
                f"silo {self.silo!r}: the deal is signed for another orchestrator key than the one "
                "registered at set-up; refusing"
            )

    def deal(self, ins: MaskDeal, federation: str) -> Dealt:
        """``federation`` (the silo's own name for it, e.g. its HE key id) salts every pair key."""
        members = ins.members
        if self.silo not in members or list(members) != sorted(set(members)):
            raise SecAggError(f"session {ins.session}: members {list(members)} must be sorted and hold us")
        if ins.session in self._used:
            raise SecAggError(f"session {ins.session}: already dealt; seeds are never reused")
        if not 2 <= ins.threshold <= len(members):
            raise SecAggError(f"session {ins.session}: threshold {ins.threshold} of {len(members)} members")
        self._pin(ins.orchestrator_key)
        peers = [m for m in members if m != self.silo]
        missing = [p for p in peers if p not in ins.sealing]
        if missing:
            raise SecAggError(f"session {ins.session}: no X25519 key for {missing}")
        session = ins.session.encode()
        pair_keys = {p: self._pair_key(p, ins.sealing[p], federation) for p in peers}
        pair_seeds = {p: _hkdf(k, b"fedsilo-secagg-mask|" + session) for p, k in pair_keys.items()}
        share_keys = {p: _hkdf(k, b"fedsilo-secagg-share|" + session) for p, k in pair_keys.items()}
        self_seed = os.urandom(SEED_BYTES)
        secrets = [int.from_bytes(self_seed, "big")] + [int.from_bytes(pair_seeds[p], "big") for p in peers]
        points = list(range(1, len(members) + 1))
        shares = split(secrets, ins.threshold, points)
        out: dict[str, bytes] = {}
        own: list[int] = []
        for point, member in zip(points, members, strict=True):
            if member == self.silo:
                own = shares[point]
                continue
            nonce = os.urandom(12)
            ad = repr((ins.session, self.silo, member)).encode()
            out[member] = nonce + ChaCha20Poly1305(share_keys[member]).encrypt(
                nonce, to_bytes(shares[point]), ad
            )
        self._used.add(ins.session)
        self._sessions[ins.session] = _Session(ins, self_seed, pair_seeds, share_keys, own)
        while len(self._sessions) > _KEPT_SESSIONS:
            del self._sessions[next(iter(self._sessions))]
        return Dealt(self.silo, ins.session, out)

    def masks(self, round_: MaskRound) -> tuple[Mask, ...]:
        """The signed masks this silo adds to its encoding for ``round_.members``."""
        state = self._sessions.get(round_.session)
        if state is None:
            raise SecAggError(f"silo {self.silo!r} dealt no shares for session {round_.session}")
        dealt = set(state.deal.members)
        members = round_.members
        if self.silo not in members or not set(members) <= dealt or list(members) != sorted(set(members)):
            raise SecAggError(f"session {round_.session}: cannot mask for members {list(members)}")
        if len(members) < state.deal.threshold:
            raise SecAggError(
                f"session {round_.session}: {len(members)} silos dealt, fewer than the threshold "
                f"{state.deal.threshold}"
            )
        if state.masked_with is not None and state.masked_with != members:
            raise SecAggError(f"session {round_.session}: already masked for {list(state.masked_with)}")
        state.masked_with = members
        pairs = [(state.pair_seeds[p], sign_of(self.silo, p)) for p in members if p != self.silo]
        return ((state.self_seed, 1), *pairs)

    def unmask(self, request: UnmaskRequest) -> UnmaskShares:
        """Shares for the signed sets, checked; a refusal is a `SecAggError` naming the rule."""
        state = self._sessions.get(request.session)
        label = f"silo {self.silo!r}, session {request.session}"
        if state is None or state.masked_with is None:
            raise SecAggError(f"{label}: this silo did not upload masked; nothing to unmask")
        assert self._orchestrator_key is not None
        try:
            Ed25519PublicKey.from_public_bytes(self._orchestrator_key).verify(
                request.signature, sets_digest(request.session, request.survivors, request.dropped)
            )
        except InvalidSignature as err:
            raise SecAggError(f"{label}: survivor set not signed by the orchestrator") from err
        survivors, dropped = request.survivors, request.dropped
        sets = (survivors, dropped)
        if state.answered is not None and state.answered != sets:
            raise SecAggError(f"{label}: asked again with different sets; refusing (one answer per session)")
        if set(survivors) & set(dropped) or sorted({*survivors, *dropped}) != list(state.masked_with):
            raise SecAggError(
                f"{label}: survivors {list(survivors)} and dropped {list(dropped)} are not a split of the "
                f"silos masked with {list(state.masked_with)}"
            )
        if self.silo not in survivors:
            raise SecAggError(f"{label}: this silo uploaded but is listed as dropped")
        need = quorum(state.deal.threshold)
        if len(survivors) < need:
            raise SecAggError(
                f"{label}: {len(survivors)} survivors, fewer than {need}: the sum would reveal an update"
            )
        state.answered = sets
        members = state.deal.members
        point = members.index(self.silo) + 1
        vectors = {self.silo: state.own_share}
        for dealer in sorted({*survivors, *dropped} - {self.silo}):
            sealed = request.relayed.get(dealer)
            if sealed is None:
                raise SecAggError(f"{label}: no share from {dealer!r} was relayed")
            ad = repr((request.session, dealer, self.silo)).encode()
            try:
                plain = ChaCha20Poly1305(state.share_keys[dealer]).decrypt(sealed[:12], sealed[12:], ad)
                vectors[dealer] = from_bytes(plain)
            except (InvalidTag, ShareError) as err:
                raise SecAggError(f"{label}: the share from {dealer!r} does not open (tampered?)") from err
        self_masks = {s: vectors[s][:1] for s in survivors}
        pair_seeds = {}
        for d in dropped:
            peers = [m for m in members if m != d]
            pair_seeds[d] = [vectors[d][1 + peers.index(k)] for k in survivors]
        return UnmaskShares(self.silo, request.session, point, self_masks, pair_seeds)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("MaskingSession holds seeds and must never be pickled")


def _seed(value: int) -> bytes:
    if value >= 2 ** (8 * SEED_BYTES):
        raise SecAggError("a rebuilt seed is out of range: shares are inconsistent")
    return value.to_bytes(SEED_BYTES, "big")


def unmask_masks(
    session: str,
    survivors: Sequence[str],
    dropped: Sequence[str],
    answers: Sequence[UnmaskShares],
    threshold: int,
) -> tuple[Mask, ...]:
    """The masks left in the survivors' sum, rebuilt from at least ``threshold`` answers:
    every survivor's self-mask, and each survivor's pair mask with each dropped silo."""
    usable = [a for a in answers if a.session == session]
    if len(usable) < threshold:
        raise SecAggError(
            f"session {session}: {len(usable)} silos answered the unmask step, the threshold is {threshold}"
        )
    masks: list[Mask] = []
    for s in survivors:
        (b,) = combine({a.point: a.self_masks[s] for a in usable}, threshold)
        masks.append((_seed(b), 1))
    for d in dropped:
        seeds = combine({a.point: a.pair_seeds[d] for a in usable}, threshold)
        masks += [(_seed(v), sign_of(k, d)) for k, v in zip(survivors, seeds, strict=True)]
    return tuple(masks)

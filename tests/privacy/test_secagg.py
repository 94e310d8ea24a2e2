"""Pairwise double masking inside the packed BFV sum, silos in-process (no Ray): the masked
sum decodes to the plain sum with silos dropping at every step, one upload decrypts to noise,
and a silo refuses what would reveal an update."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy.codec import CodecError, PlainCodec, dither
from privacy.masking import combined, expand
from privacy.packed import BLOCK, PackedCodec, PackedKeys, public_packed_codec
from privacy.params import PackedParams
from privacy.sealing import SealingKey
from privacy.secagg import (
    MaskDeal,
    MaskingSession,
    MaskRound,
    OrchestratorKey,
    SecAggError,
    UnmaskRequest,
    unmask_masks,
)
from privacy.secure_sum import SecureSumCodec

BOUND = 4.0


@pytest.fixture(scope="module")
def keys() -> PackedKeys:
    return PackedKeys.generate(PackedParams(max_silos=8))


class Federation:
    """n silos' masking sessions and an orchestrator key, as the actors hold them."""

    def __init__(self, n: int) -> None:
        self.names = [f"silo-{i}" for i in range(n)]
        self.sealing = {name: SealingKey.generate() for name in self.names}
        self.sessions = {name: MaskingSession(name, self.sealing[name]) for name in self.names}
        self.key = OrchestratorKey()

    def deal(self, session: str, threshold: int, members: list[str] | None = None) -> dict:
        members = sorted(members or self.names)
        publics = {m: self.sealing[m].public_bytes() for m in members}
        ins = MaskDeal(session, tuple(members), threshold, publics, self.key.public_bytes())
        return {m: self.sessions[m].deal(ins, "fed") for m in members}

    def dealt_and_masked(self, session: str, threshold: int) -> tuple[dict, tuple[str, ...]]:
        """Every silo dealt and masked for ``session``: (what each dealt, the members)."""
        dealt = self.deal(session, threshold)
        members = tuple(sorted(dealt))
        for name in members:
            self.sessions[name].masks(MaskRound(session, members))
        return dealt, members

    def request(self, session: str, dealt: dict, survivors: list[str], dropped: list[str], to: str):
        relayed = {d: dealt[d].shares[to] for d in dealt if d != to}
        return self.key.request(session, survivors, dropped, relayed)


def masked_sum(
    codec: PackedCodec,
    orchestrator: PackedCodec,
    fed: Federation,
    values: dict[str, np.ndarray],
    *,
    no_deal: set[str] = frozenset(),
    no_upload: set[str] = frozenset(),
    no_unmask: set[str] = frozenset(),
    threshold: int | None = None,
) -> tuple[np.ndarray, list[str]]:
    """One secure sum, following the orchestrator's steps; returns (decoded sum, survivors)."""
    staged = sorted(values)
    t = threshold or len(staged) // 2 + 1
    dealt = {m: d for m, d in fed.deal("s", t, staged).items() if m not in no_deal}
    members = tuple(sorted(dealt))
    running = orchestrator.accumulator()
    survivors = []
    for name in members:
        masks = fed.sessions[name].masks(MaskRound("s", members))
        payload = codec.encode(values[name], bound=BOUND, tag=f"r/{name}", masks=masks)
        if name not in no_upload:
            running.add(payload)
            survivors.append(name)
    dropped = [m for m in members if m not in survivors]
    answers = [
        fed.sessions[n].unmask(fed.request("s", dealt, survivors, dropped, n))
        for n in survivors
        if n not in no_unmask
    ]
    masks = unmask_masks("s", tuple(survivors), tuple(dropped), answers, t)
    return codec.decode(replace(running.result(), unmask=masks)), survivors


@settings(max_examples=12, deadline=None)
@given(
    n=st.integers(min_value=3, max_value=7),
    length=st.integers(min_value=1, max_value=20000),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    data=st.data(),
)
def test_decode_of_the_masked_sum_is_the_sum_with_dropouts(
    keys: PackedKeys, n: int, length: int, seed: int, data: st.DataObject
) -> None:
    # Prepare: n silos' vectors; up to n - t silos drop, at any of the three steps
    codec = keys.codec()
    orchestrator = public_packed_codec(keys.public_bytes(), keys.params, keys.key_id)
    rng = np.random.default_rng(seed)
    values = {f"silo-{i}": rng.uniform(-BOUND, BOUND, length) for i in range(n)}
    t = n // 2 + 1
    order = data.draw(st.permutations(sorted(values)))
    out = order[: data.draw(st.integers(min_value=0, max_value=n - t))]
    steps = [data.draw(st.sampled_from(["deal", "upload", "unmask"])) for _ in out]
    no_deal = {s for s, step in zip(out, steps, strict=True) if step == "deal"}
    no_upload = {s for s, step in zip(out, steps, strict=True) if step == "upload"}
    no_unmask = {s for s, step in zip(out, steps, strict=True) if step == "unmask"}
    # Execute
    total, survivors = masked_sum(
        codec, orchestrator, Federation(n), values, no_deal=no_deal, no_upload=no_upload, no_unmask=no_unmask
    )
    # Assert: exactly the survivors' sum, up to half a quantization step each
    expected = sum(values[s] for s in survivors)
    step = BOUND / (2 ** (keys.params.value_bits - 1) - 1)
    assert np.max(np.abs(total - expected)) <= len(survivors) * step / 2 + 1e-9


def test_one_upload_decrypted_alone_matches_its_true_slots_nowhere(keys: PackedKeys) -> None:
    # Prepare: a silo's masked encoding and the same values unmasked
    codec = keys.codec()
    fed = Federation(4)
    dealt = fed.deal("s", 3)
    masks = fed.sessions["silo-0"].masks(MaskRound("s", tuple(sorted(dealt))))
    x = np.random.default_rng(1).uniform(-BOUND, BOUND, 12288)
    # Execute: what a silo holding the HE key reads from the single masked upload
    read = codec.decode(codec.encode(x, bound=BOUND, tag="r/silo-0", masks=masks))
    # Assert: not one value is within a quantization step of the truth
    step = BOUND / (2 ** (keys.params.value_bits - 1) - 1)
    assert np.mean(np.abs(read - x) <= step) < 0.001


def test_masks_are_uniform_below_the_modulus() -> None:
    modulus = (1 << 60) - 93
    draws = expand(bytes(range(32)), 200_000, modulus)
    assert draws.max() < modulus
    # the top bit of a 60-bit uniform draw is set about half the time
    assert abs(np.mean(draws >= np.uint64(1 << 59)) - 0.5) < 0.01
    assert np.all(combined([(bytes(32), 1), (bytes(32), -1)], 1000, modulus) == 0)


def test_a_silo_answers_one_set_per_session_and_never_both_kinds(keys: PackedKeys) -> None:
    # Prepare: five silos dealt and masked
    fed = Federation(5)
    dealt, members = fed.dealt_and_masked("s", 3)
    first = fed.sessions["silo-0"].unmask(fed.request("s", dealt, list(members[:4]), [members[4]], "silo-0"))
    # Execute / Assert: the same set again is answered, a different one (silo-4 now a survivor,
    # after its pair seeds were asked for) is refused
    again = fed.sessions["silo-0"].unmask(fed.request("s", dealt, list(members[:4]), [members[4]], "silo-0"))
    assert again.self_masks == first.self_masks
    with pytest.raises(SecAggError, match="different sets"):
        fed.sessions["silo-0"].unmask(fed.request("s", dealt, list(members), [], "silo-0"))


def test_unsigned_or_too_small_survivor_sets_are_refused(keys: PackedKeys) -> None:
    fed = Federation(5)
    dealt, members = fed.dealt_and_masked("s", 3)
    good = fed.request("s", dealt, list(members[:3]), list(members[3:]), "silo-0")
    forged = UnmaskRequest(
        "s", good.survivors[:2], (*good.dropped, good.survivors[2]), good.signature, good.relayed
    )
    with pytest.raises(SecAggError, match="not signed by the orchestrator"):
        fed.sessions["silo-0"].unmask(forged)
    small = fed.request("s", dealt, list(members[:2]), list(members[2:]), "silo-0")
    with pytest.raises(SecAggError, match="fewer than 3"):
        fed.sessions["silo-0"].unmask(small)
    other = OrchestratorKey().request("s", list(members), [], {})
    with pytest.raises(SecAggError, match="not signed"):
        fed.sessions["silo-1"].unmask(other)


def test_sessions_are_never_dealt_twice_and_tampered_shares_are_named(keys: PackedKeys) -> None:
    fed = Federation(3)
    dealt = fed.deal("s", 2)
    with pytest.raises(SecAggError, match="already dealt"):
        fed.deal("s", 2)
    members = tuple(sorted(dealt))
    for name in members:
        fed.sessions[name].masks(MaskRound("s", members))
    request = fed.request("s", dealt, list(members), [], "silo-0")
    bad = dict(request.relayed)
    bad["silo-1"] = bad["silo-1"][:-1] + bytes([bad["silo-1"][-1] ^ 1])
    with pytest.raises(SecAggError, match="from 'silo-1' does not open"):
        fed.sessions["silo-0"].unmask(replace(request, relayed=bad))


def test_too_few_answers_cannot_unmask() -> None:
    with pytest.raises(SecAggError, match="1 silos answered the unmask step, the threshold is 2"):
        fed = Federation(3)
        dealt, members = fed.dealt_and_masked("s", 2)
        answer = fed.sessions["silo-0"].unmask(fed.request("s", dealt, list(members), [], "silo-0"))
        unmask_masks("s", members, (), [answer], 2)


def test_codecs_without_integer_slots_refuse_masks() -> None:
    with pytest.raises(CodecError, match="cannot mask"):
        PlainCodec().encode([1.0], tag="x", masks=[(bytes(32), 1)])


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=6),
    length=st.integers(min_value=1, max_value=3000),
    exact=st.booleans(),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_secure_sum_without_he_decodes_only_the_sum(n: int, length: int, exact: bool, seed: int) -> None:
    # Prepare: n silos mask their quantized vectors (no HE) for one session
    codec = SecureSumCodec()
    fed = Federation(n)
    dealt = fed.deal("s", max(2, n // 2 + 1))
    members = tuple(sorted(dealt))
    rng = np.random.default_rng(seed)
    values = {m: rng.uniform(-BOUND, BOUND, length) for m in members}
    uploads = {
        m: codec.encode(values[m], bound=BOUND, tag=f"r/{m}", exact=exact,
                        masks=fed.sessions[m].masks(MaskRound("s", members)))
        for m in members
    }  # fmt: skip
    running = codec.accumulator()
    for payload in uploads.values():
        running.add(payload)
    answers = [fed.sessions[m].unmask(fed.request("s", dealt, list(members), [], m)) for m in members]
    masks = unmask_masks("s", members, (), answers, max(2, n // 2 + 1))
    # Execute
    total = codec.decode(replace(running.result(0.5), unmask=masks))
    alone = codec.decode(uploads[members[0]])
    # Assert: the sum (here halved) to within half a step per silo; one upload alone is noise
    step = BOUND / (2 ** ((52 if exact else 32) - 1) - 1)
    assert np.max(np.abs(total - 0.5 * sum(values.values()))) <= n * step
    assert np.mean(np.abs(alone - values[members[0]]) <= 1.0) < 0.01 or length < 50


def test_pair_seeds_are_bound_to_the_federation_and_the_session() -> None:
    # Prepare: the same two silos' keys in two federations and two sessions
    fed = Federation(2)
    publics = {m: fed.sealing[m].public_bytes() for m in fed.names}

    def pair_mask(session: str, federation: str) -> bytes:
        ins = MaskDeal(session, tuple(fed.names), 2, publics, fed.key.public_bytes())
        fed.sessions["silo-0"].deal(ins, federation)
        (_, (seed, _)) = fed.sessions["silo-0"].masks(MaskRound(session, tuple(fed.names)))
        return seed

    # Execute / Assert: a seed is never reused across sessions or federations
    assert len({pair_mask("s1", "a"), pair_mask("s2", "a"), pair_mask("s3", "b")}) == 3


def test_a_new_orchestrator_key_registered_at_set_up_replaces_the_old() -> None:
    fed = Federation(3)
    dealt, members = fed.dealt_and_masked("s", 2)
    replacement = OrchestratorKey()
    # a deal or request signed by an unregistered key is refused...
    with pytest.raises(SecAggError, match="another orchestrator key"):
        ins = MaskDeal(
            "t", members, 2, {m: fed.sealing[m].public_bytes() for m in members}, replacement.public_bytes()
        )
        fed.sessions["silo-0"].deal(ins, "fed")
    # ...until the replacement sets up (registers its key); it then signs the unmask step
    assert fed.sessions["silo-0"].trust(replacement.public_bytes())
    relayed = {d: dealt[d].shares["silo-0"] for d in members if d != "silo-0"}
    answer = fed.sessions["silo-0"].unmask(replacement.request("s", list(members), [], relayed))
    assert set(answer.self_masks) == set(members)


@settings(max_examples=20, deadline=None)
@given(
    count=st.integers(min_value=1, max_value=5000),
    row=st.sampled_from([7, 64, 4096]),
    cut=st.integers(min_value=0, max_value=40),
)
def test_masks_and_dither_drawn_block_by_block_equal_the_whole(count: int, row: int, cut: int) -> None:
    # Prepare: a vector's masks and dither, whole and from a row boundary on
    masks = [(bytes(range(32)), 1), (bytes(32), -1)]
    first = min(cut, -(-count // row))
    start = first * row
    # Execute
    whole = combined(masks, count, 97, row)
    tail = combined(masks, max(0, count - start), 97, row, first)
    full, part = dither(b"k", "t", count), dither(b"k", "t", max(0, count - start), start=start)
    # Assert
    assert np.array_equal(whole[start:], tail) and np.array_equal(full[start:], part)


def test_a_model_of_several_blocks_sums_exactly_under_masks(keys: PackedKeys) -> None:
    # Prepare: 3 silos, a vector longer than one block of ciphertexts (BLOCK x 4096 x lanes)
    codec = keys.codec()
    orchestrator = public_packed_codec(keys.public_bytes(), keys.params, keys.key_id)
    length = BLOCK * keys.params.values_per_ciphertext + 12345
    rng = np.random.default_rng(3)
    values = {f"silo-{i}": rng.uniform(-BOUND, BOUND, length) for i in range(3)}
    # Execute: one silo drops after dealing
    total, survivors = masked_sum(codec, orchestrator, Federation(3), values, no_upload={"silo-2"})
    # Assert
    step = BOUND / (2 ** (keys.params.value_bits - 1) - 1)
    assert np.max(np.abs(total - values["silo-0"] - values["silo-1"])) <= step + 1e-9

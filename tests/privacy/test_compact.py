"""The compact wire format: bit-packing, the orchestrator's numpy sum against SEAL's own addition."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import tenseal.sealapi as seal
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy.codec import CodecError, Payload
from privacy.compact import MAGIC, Compact, SealTemplate, WordLayout, _seal_body
from privacy.packed import PackedCodec, PackedKeys, _SealFiles, public_packed_codec


@pytest.fixture(scope="module")
def keys() -> PackedKeys:
    return PackedKeys.generate()


@pytest.fixture(scope="module")
def orchestrator(keys: PackedKeys) -> PackedCodec:
    return public_packed_codec(keys.public_bytes(), keys.params, keys.key_id)


@settings(max_examples=60, deadline=None)
@given(
    bits=st.lists(st.integers(min_value=20, max_value=62), min_size=1, max_size=4),
    degree=st.sampled_from([8, 16, 64]),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_packing_round_trips_every_word_below_its_modulus(bits: list[int], degree: int, seed: int) -> None:
    # Prepare: moduli of the given bit lengths and words anywhere below them, edges included
    moduli = tuple((1 << b) - 1 - 2 * j for j, b in enumerate(bits))
    layout = WordLayout(degree, moduli)
    rng = np.random.default_rng(seed)
    words = np.stack([rng.integers(0, q, size=degree, dtype=np.uint64) for q in moduli])
    words[:, 0] = 0
    words[:, -1] = np.array(moduli, dtype=np.uint64) - 1
    # Execute
    packed = layout.pack(words)
    # Assert: each limb takes its modulus' bits, nothing more, and comes back exactly
    assert len(packed) == layout.packed_bytes == sum(degree * b // 8 for b in bits)
    np.testing.assert_array_equal(layout.unpack(packed), words)


def _words_of(blob: bytes, limbs: int, degree: int) -> np.ndarray:
    """Every word of a SEAL (unseeded) ciphertext blob: c0 then c1."""
    body, _ = _seal_body(blob)
    at = 73 + 16
    (count,) = struct.unpack_from("<Q", body, at)
    assert count == 2 * limbs * degree
    return np.frombuffer(body, dtype=np.uint64, count=count, offset=at + 8).copy()


@settings(max_examples=8, deadline=None)
@given(silos=st.integers(min_value=1, max_value=8), seed=st.integers(min_value=0, max_value=2**16))
def test_the_numpy_sum_is_sealS_own_addition(
    keys: PackedKeys, orchestrator: PackedCodec, silos: int, seed: int
) -> None:
    # Prepare: each silo's update, encrypted; the same ciphertexts loaded and added by SEAL
    silo = keys.codec()
    rng = np.random.default_rng(seed)
    payloads = [silo.encode(rng.normal(0, 1, 50), bound=4.0, tag=f"s{k}") for k in range(silos)]
    files, evaluator = _SealFiles(), seal.Evaluator(silo._context)
    reference = None
    for payload in payloads:
        (ct,) = [silo._ciphertext(c) for c in silo._load(payload)]
        if reference is None:
            reference = ct
        else:
            evaluator.add_inplace(reference, ct)
    # Execute: the orchestrator's streaming sum, in the compact form only
    running = orchestrator.accumulator()
    for payload in payloads:
        running.add(payload)
    total = running.result()
    # Assert: the silo's ciphertext of the sum is word for word SEAL's sum
    (summed,) = [silo._ciphertext(c) for c in silo._load(total)]
    layout = silo.words
    limbs, degree = len(layout.moduli), layout.degree
    assert reference is not None
    np.testing.assert_array_equal(
        _words_of(files.dump(summed), limbs, degree), _words_of(files.dump(reference), limbs, degree)
    )
    assert len(Compact.from_bytes(total.chunks[0], layout).seeds) == silos


def test_the_wire_is_smaller_than_seal_s_own_serialization(
    keys: PackedKeys, orchestrator: PackedCodec
) -> None:
    # Prepare: one full ciphertext's worth of values from each of 4 silos
    silo = keys.codec()
    per_ct = keys.params.values_per_ciphertext
    ups = [silo.encode(np.full(per_ct, 0.1 * k), bound=1.0, tag=f"s{k}") for k in range(4)]
    # Execute
    total = orchestrator.accumulator()
    for up in ups:
        total.add(up)
    down = total.result()
    # Assert: up about 3 bytes per value (c0 at 36 bits a coefficient), down the same plus
    # 65 bytes a silo, both below plaintext float32's 4; decoded, the sum is right
    assert ups[0].nbytes / per_ct < 3.01
    assert down.nbytes / per_ct < 3.03
    np.testing.assert_allclose(silo.decode(down), np.full(per_ct, 0.6), atol=1e-3)


def test_a_silo_decodes_before_it_ever_encoded(keys: PackedKeys) -> None:
    payload = keys.codec().encode([0.25, -0.5], bound=1.0, tag="a")
    np.testing.assert_allclose(keys.codec().decode(payload), [0.25, -0.5], atol=1e-4)


@pytest.mark.parametrize(
    "mangle, message",
    [
        (lambda b: b"XXXX" + b[4:], "bad magic"),
        (lambda b: b[:-1], "bytes, expected"),
        (lambda b: b[:4] + struct.pack("<I", 2) + b[8:], "bytes, expected"),
        (lambda b: b[:4] + struct.pack("<I", 0) + b[8:], "bytes, expected"),
        (lambda b: b[: -layout_bytes()] + b"\xff" * layout_bytes(), "at or above its modulus"),
    ],
)
def test_malformed_chunks_are_refused_with_the_reason(
    keys: PackedKeys, orchestrator: PackedCodec, mangle: object, message: str
) -> None:
    good = keys.codec().encode([1.0], bound=1.0, tag="a")
    bad = Payload(good.codec, (mangle(good.chunks[0]),), good.length, good.bound, good.layout,  # type: ignore[operator]
                  terms=("b",), key_id=good.key_id)  # fmt: skip
    with pytest.raises(CodecError, match=f"unreadable BFV ciphertext.*{message}"):
        orchestrator.add(good, bad)


def layout_bytes() -> int:
    return PackedKeys.generate().codec().words.packed_bytes


def test_a_seed_of_another_generator_type_is_refused_by_the_decrypting_silo(keys: PackedKeys) -> None:
    silo = keys.codec()
    good = silo.encode([1.0], bound=1.0, tag="a")
    chunk = good.chunks[0]
    bad_seed = chunk[:8] + bytes([9]) + chunk[9:]  # PRNG type 9 does not exist
    bad = Payload(
        good.codec, (bad_seed,), good.length, good.bound, good.layout, terms=("a",), key_id=good.key_id
    )
    with pytest.raises(CodecError, match="unreadable BFV ciphertext"):
        silo.decode(bad)


def test_the_template_matches_seal_s_layout(keys: PackedKeys) -> None:
    silo = keys.codec()
    blob = _SealFiles().dump(silo._encryptor.encrypt_symmetric(seal.Plaintext("1")))  # type: ignore[union-attr]
    template, words, seed = SealTemplate.parse(blob, silo.words)
    again = SealTemplate.parse(template.blob(words, seed), silo.words)
    np.testing.assert_array_equal(again[1], words)
    assert again[2] == seed and MAGIC == b"FSC1"

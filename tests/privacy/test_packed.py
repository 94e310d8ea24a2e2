"""The packed codec: exact sums of quantized values, half a step of error, keys kept apart."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from privacy.aggregate import WeightedSum, bound_hint, encode_weighted
from privacy.codec import CodecError, Payload
from privacy.codec import dither as codec_dither
from privacy.packed import PackedCodec, PackedKeys, public_packed_codec
from privacy.params import PackedParams

MAX_SILOS = 8  # 16-bit values, 3 lanes of 19 bits: the largest count these parameters allow


@pytest.fixture(scope="module")
def keys() -> PackedKeys:
    return PackedKeys.generate(PackedParams(max_silos=MAX_SILOS))


@pytest.fixture(scope="module")
def orchestrator(keys: PackedKeys) -> PackedCodec:
    return public_packed_codec(keys.public_bytes(), keys.params, keys.key_id)


def dequantized(codec: PackedCodec, x: np.ndarray, bound: float, tag: str, exact: bool = False) -> np.ndarray:
    """What one encoding stands for, computed in the clear: the reference for the sums."""
    bits, _, _ = codec._layout(exact)
    step = bound / (2 ** (bits - 1) - 1)
    dither = codec_dither(codec._dither_key, tag, x.size)
    return (np.rint(np.clip(x, -bound, bound) / step + dither) - dither) * step


@st.composite
def silo_vectors(draw: st.DrawFn) -> tuple[list[np.ndarray], float]:
    length = draw(st.integers(1, 30_000))  # up to 3 ciphertexts of 12288 values
    silos = draw(st.integers(1, MAX_SILOS))
    bound = draw(st.sampled_from([1e-4, 0.5, 3.0, 1e3]))
    values = st.floats(-bound, bound, allow_nan=False, allow_infinity=False)
    edge = draw(st.booleans())  # every value at +-bound: the lanes' worst case
    if edge:
        return [np.full(length, bound if i % 2 else -bound) for i in range(silos)] + [], bound
    return [draw(arrays(np.float64, length, elements=values)) for _ in range(silos)], bound


@settings(max_examples=25, deadline=None)
@given(silo_vectors())
def test_sum_equals_the_sum_of_quantized_values(
    keys: PackedKeys, orchestrator: PackedCodec, case: tuple[list[np.ndarray], float]
) -> None:
    # Prepare
    vectors, bound = case
    silo = keys.codec()
    payloads = [silo.encode(x, bound=bound, tag=f"t/{i}") for i, x in enumerate(vectors)]
    # Execute: the orchestrator adds with parameters only
    total = payloads[0]
    for p in payloads[1:]:
        total = orchestrator.add(total, p)
    decoded = silo.decode(total)
    # Assert: exactly the quantized sum, and within half a step per addend of the true sum
    expected = np.sum([dequantized(silo, x, bound, f"t/{i}") for i, x in enumerate(vectors)], axis=0)
    step = bound / (2**15 - 1)
    np.testing.assert_allclose(decoded, expected, rtol=0, atol=1e-9 * step * len(vectors))
    assert np.abs(decoded - np.sum(vectors, axis=0)).max() <= len(vectors) * step / 2 * (1 + 1e-9)


def test_mean_error_is_at_most_half_a_step(keys: PackedKeys, orchestrator: PackedCodec) -> None:
    rng = np.random.default_rng(0)
    vectors = [rng.normal(0, 0.3, 50_000) for _ in range(4)]
    silo = keys.codec()
    running = WeightedSum(orchestrator)
    for i, x in enumerate(vectors):
        running.add(encode_weighted(silo, x, 1.0, bound=2.0, tag=f"r/{i}"))
    error = silo.decode(running.mean()) - np.mean(vectors, axis=0)
    step = 2.0 / (2**15 - 1)
    assert np.abs(error).max() <= step / 2
    assert abs(error.mean()) < step / 50  # unbiased: the dither's error averages out


def test_exact_layout_for_statistics(keys: PackedKeys, orchestrator: PackedCodec) -> None:
    silo = keys.codec()
    a, b = np.array([303.0, 61234.5, 1.25e7]), np.array([294.0, 70001.25, 9.5e6])
    bound = max(bound_hint(a), bound_hint(b))
    total = orchestrator.add(
        silo.encode(a, bound=bound, tag="s/a", exact=True), silo.encode(b, bound=bound, tag="s/b", exact=True)
    )
    step = bound / (2**51 - 1)  # 52-bit values: counts and sums to about 1e-15 of the range
    np.testing.assert_allclose(silo.decode(total), a + b, rtol=0, atol=2 * step)


def test_scaling_is_recorded_and_applied_by_the_decoder(keys: PackedKeys, orchestrator: PackedCodec) -> None:
    silo = keys.codec()
    scaled = orchestrator.scale(silo.encode([1.0, -2.0], bound=4.0, tag="x"), 0.25)
    assert scaled.scale == 0.25
    np.testing.assert_allclose(silo.decode(scaled), [0.25, -0.5], atol=4.0 / 32767)


def test_more_silos_than_the_headroom_is_refused(keys: PackedKeys, orchestrator: PackedCodec) -> None:
    silo = keys.codec()
    total = silo.encode([1.0], bound=1.0, tag="h/0")
    for i in range(1, MAX_SILOS):
        total = orchestrator.add(total, silo.encode([1.0], bound=1.0, tag=f"h/{i}"))
    with pytest.raises(CodecError, match="9 contributions exceed the packed codec's headroom for 8 silos"):
        orchestrator.add(total, silo.encode([1.0], bound=1.0, tag="h/8"))


def test_the_same_contribution_twice_is_refused(keys: PackedKeys, orchestrator: PackedCodec) -> None:
    silo = keys.codec()
    running = WeightedSum(orchestrator)
    item = encode_weighted(silo, [1.0], 1.0, bound=1.0, tag="round-1/a")
    running.add(item)
    with pytest.raises(CodecError, match=r"duplicate contribution \['round-1/a'\]"):
        running.add(item)


def test_a_ciphertext_under_another_key_is_refused(keys: PackedKeys, orchestrator: PackedCodec) -> None:
    stranger = PackedKeys.generate(keys.params).codec()
    ours = keys.codec().encode([1.0], bound=1.0, tag="a")
    theirs = stranger.encode([1.0], bound=1.0, tag="b")
    with pytest.raises(CodecError, match="encrypted under another key"):
        orchestrator.add(ours, theirs)
    with pytest.raises(CodecError, match="encrypted under another key"):
        keys.codec().decode(theirs)


def test_different_ranges_do_not_mix(keys: PackedKeys, orchestrator: PackedCodec) -> None:
    silo = keys.codec()
    with pytest.raises(CodecError, match="quantized differently"):
        orchestrator.add(silo.encode([1.0], bound=1.0, tag="a"), silo.encode([1.0], bound=2.0, tag="b"))


def test_garbled_bytes_are_refused(keys: PackedKeys, orchestrator: PackedCodec) -> None:
    good = keys.codec().encode([1.0], bound=1.0, tag="a")
    bad = Payload(good.codec, (b"garbage" * 10,), good.length, good.bound, good.layout, terms=("b",),
                  key_id=good.key_id)  # fmt: skip
    with pytest.raises(CodecError, match="unreadable BFV ciphertext"):
        orchestrator.add(good, bad)


def test_the_orchestrator_can_neither_decrypt_nor_encrypt(
    keys: PackedKeys, orchestrator: PackedCodec
) -> None:
    payload = keys.codec().encode([1.0, 2.0], bound=4.0, tag="a")
    assert not orchestrator.can_decrypt
    with pytest.raises(CodecError, match="cannot decrypt"):
        orchestrator.decode(payload)
    with pytest.raises(CodecError, match="cannot encrypt"):
        orchestrator.encode([1.0], bound=1.0, tag="x")
    assert len(keys.public_bytes()) < 200  # the encryption parameters, nothing else


def test_secret_keys_round_trip_and_refuse_to_pickle(keys: PackedKeys) -> None:
    again = PackedKeys.from_secret_bytes(keys.secret_bytes(), keys.params)
    assert again.key_id == keys.key_id
    assert again.codec().decode(keys.codec().encode([0.5], bound=1.0, tag="a"))[0] == pytest.approx(
        0.5, abs=1e-4
    )
    with pytest.raises(TypeError, match="never be pickled"):
        pickle.dumps(keys)


def test_sizes_per_parameter(keys: PackedKeys, orchestrator: PackedCodec) -> None:
    n = keys.params.values_per_ciphertext * 4
    silo = keys.codec()
    up = silo.encode(np.zeros(n), bound=1.0, tag="a")
    down = orchestrator.add(up, silo.encode(np.zeros(n), bound=1.0, tag="b"))
    assert up.nbytes / n < 5 and down.nbytes / n < 10


def test_parameters_that_cannot_pack_a_value_are_refused() -> None:
    with pytest.raises(ValueError, match="need 76 bits per lane"):
        PackedParams(value_bits=60, max_silos=65536).check()
    assert PackedParams(max_silos=4).lanes == 3 and PackedParams(max_silos=16).lanes == 2


def test_worker_processes_encrypt_and_decrypt_as_this_process_does() -> None:
    # Prepare: one key; a codec in this process and one with two worker processes
    keys = PackedKeys.generate()
    here, workers = keys.codec(), keys.codec(workers=2)
    x = np.random.default_rng(5).uniform(-2.0, 2.0, 3 * keys.params.values_per_ciphertext * 40)
    try:
        # Execute: each encodes, both decode the other's and the sum
        a, b = here.encode(x, bound=2.0, tag="a"), workers.encode(-x / 2, bound=2.0, tag="b")
        total = here.add(a, b)
        # Assert: the same values whichever process encrypted or decrypted
        assert np.array_equal(here.decode(b), workers.decode(b))
        assert np.array_equal(here.decode(total), workers.decode(total))
        assert np.max(np.abs(workers.decode(total) - x / 2)) <= 2.0 / (2**15 - 1)
    finally:
        workers._workers.close()
    with pytest.raises(TypeError, match="never be pickled"):
        pickle.dumps(keys.codec(workers=2)._workers)

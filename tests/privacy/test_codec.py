"""Codecs: decode(sum(encode(x_i))) == sum(x_i), plaintext and CKKS, through one aggregate."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from privacy.aggregate import WeightedSum, aggregate, encode_weighted
from privacy.codec import CodecError, Payload, PlainCodec
from privacy.he import CKKSCodec, CKKSKeys, public_codec
from privacy.params import CKKSParams


@pytest.fixture(scope="module")
def keys() -> CKKSKeys:
    return CKKSKeys.generate()


@pytest.fixture(scope="module")
def orchestrator_codec(keys: CKKSKeys) -> CKKSCodec:
    return public_codec(keys.public_bytes(), keys.params, keys.key_id)


def _silo_updates(draw: st.DrawFn, max_len: int, max_silos: int) -> tuple[list[np.ndarray], list[float]]:
    length = draw(st.integers(1, max_len))
    silos = draw(st.integers(1, max_silos))
    bound = draw(st.sampled_from([1e-3, 1.0, 100.0]))
    values = st.floats(-bound, bound, allow_nan=False, allow_infinity=False)
    updates = [draw(arrays(np.float64, length, elements=values)) for _ in range(silos)]
    weights = [float(draw(st.integers(1, 500))) for _ in range(silos)]
    return updates, weights


@st.composite
def small_updates(draw: st.DrawFn) -> tuple[list[np.ndarray], list[float]]:
    return _silo_updates(draw, max_len=50, max_silos=8)


@st.composite
def ckks_updates(draw: st.DrawFn) -> tuple[list[np.ndarray], list[float]]:
    # lengths past one ciphertext (4096 slots) exercise chunking
    return _silo_updates(draw, max_len=9000, max_silos=5)


def _expected_mean(updates: list[np.ndarray], weights: list[float]) -> np.ndarray:
    return sum(w * u for w, u in zip(weights, updates, strict=True)) / sum(weights)


@given(small_updates())
def test_plain_weighted_mean_is_exact(case: tuple[list[np.ndarray], list[float]]) -> None:
    # Prepare
    updates, weights = case
    codec = PlainCodec()
    # Execute
    mean = codec.decode(
        aggregate(codec, [encode_weighted(codec, u, w) for u, w in zip(updates, weights, strict=True)])
    )
    # Assert
    np.testing.assert_allclose(mean, _expected_mean(updates, weights), rtol=1e-12, atol=1e-12)


@settings(max_examples=15, deadline=None)
@given(ckks_updates())
def test_ckks_weighted_mean_matches_plaintext(
    keys: CKKSKeys, orchestrator_codec: CKKSCodec, case: tuple[list[np.ndarray], list[float]]
) -> None:
    # Prepare: silos encrypt with the secret context
    updates, weights = case
    silo = keys.codec()
    items = [encode_weighted(silo, u, w) for u, w in zip(updates, weights, strict=True)]
    # Execute: the orchestrator adds and scales with the public context only
    mean = silo.decode(aggregate(orchestrator_codec, items))
    # Assert: CKKS at scale 2^40 is accurate to ~1e-6 of the value range
    scale = max(1.0, float(max(np.abs(u).max() for u in updates)))
    np.testing.assert_allclose(mean, _expected_mean(updates, weights), atol=1e-6 * scale)


@settings(max_examples=10, deadline=None)
@given(ckks_updates())
def test_ckks_sum_without_scaling(
    keys: CKKSKeys, orchestrator_codec: CKKSCodec, case: tuple[list[np.ndarray], list[float]]
) -> None:
    updates, _ = case
    silo = keys.codec()
    running = WeightedSum(orchestrator_codec)
    for update in updates:
        running.add(encode_weighted(silo, update, 1.0))
    scale = max(1.0, float(max(np.abs(u).max() for u in updates)))
    np.testing.assert_allclose(silo.decode(running.total()), np.sum(updates, axis=0), atol=1e-6 * scale)


def test_orchestrator_context_cannot_decrypt(keys: CKKSKeys, orchestrator_codec: CKKSCodec) -> None:
    # Prepare
    payload = keys.codec().encode([1.0, 2.0, 3.0])
    # Execute / Assert
    assert not orchestrator_codec.can_decrypt
    with pytest.raises(CodecError, match="cannot decrypt"):
        orchestrator_codec.decode(payload)
    import tenseal as ts

    context = ts.context_from(keys.public_bytes())
    assert not context.is_private()
    vector = ts.ckks_vector_from(context, payload.chunks[0])
    with pytest.raises(ValueError, match="secret"):
        vector.decrypt()


def test_public_context_carries_no_keys(keys: CKKSKeys) -> None:
    import tenseal as ts

    public = ts.context_from(keys.public_bytes())
    assert not public.has_galois_keys()
    assert not public.has_relin_keys()
    assert len(keys.public_bytes()) < 1024  # parameters only; a secret context is ~500 KB
    assert len(keys.secret_bytes()) > 100 * len(keys.public_bytes())


def test_orchestrator_refuses_a_secret_context(keys: CKKSKeys) -> None:
    with pytest.raises(CodecError, match="secret key"):
        public_codec(keys.secret_bytes(), keys.params, keys.key_id)


def test_secret_keys_refuse_to_pickle(keys: CKKSKeys) -> None:
    with pytest.raises(TypeError, match="never be pickled"):
        pickle.dumps(keys)


def test_payload_of_another_codec_is_refused(keys: CKKSKeys, orchestrator_codec: CKKSCodec) -> None:
    plain = PlainCodec().encode([1.0, 2.0])
    with pytest.raises(CodecError, match="encoded with 'off'"):
        orchestrator_codec.add(keys.codec().encode([1.0, 2.0]), plain)


def test_ckks_ciphertext_under_another_key_is_refused(keys: CKKSKeys, orchestrator_codec: CKKSCodec) -> None:
    stranger = CKKSKeys.generate().codec().encode([1.0])
    with pytest.raises(CodecError, match="encrypted under another key"):
        orchestrator_codec.add(keys.codec().encode([1.0]), stranger)


def test_payload_of_wrong_length_is_refused(keys: CKKSKeys, orchestrator_codec: CKKSCodec) -> None:
    silo = keys.codec()
    with pytest.raises(CodecError, match="holds 3 values, expected 2"):
        orchestrator_codec.add(silo.encode([1.0, 2.0]), silo.encode([1.0, 2.0, 3.0]))


def test_garbage_ciphertext_is_refused(orchestrator_codec: CKKSCodec) -> None:
    garbage = Payload("ckks", (b"not a ciphertext",), 1, key_id=orchestrator_codec.key_id)
    with pytest.raises(CodecError, match="unreadable CKKS ciphertext"):
        orchestrator_codec.scale(garbage, 0.5)


def test_nan_is_never_encrypted(keys: CKKSKeys) -> None:
    with pytest.raises(CodecError, match="NaN"):
        keys.codec().encode([1.0, float("nan")])


def test_weights_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        encode_weighted(PlainCodec(), [1.0], 0.0)


def test_ckks_params_describe_has_no_secret(keys: CKKSKeys) -> None:
    described = keys.codec().describe()
    assert described == {
        "scheme": "ckks",
        "poly_modulus_degree": "8192",
        "coeff_mod_bit_sizes": "60,40,60",
        "scale_bits": "40",
        "galois_keys": "none",
        "key_id": keys.key_id,
    }
    assert CKKSParams().slots == 4096

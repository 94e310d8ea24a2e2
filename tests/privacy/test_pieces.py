"""Updates in pieces: the pieces' sums joined are the whole encodings' sum, for every codec."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy.codec import Codec, CodecError, PlainCodec
from privacy.he import CKKSKeys
from privacy.packed import PackedKeys
from privacy.params import CKKSParams, PackedParams
from privacy.pieces import PieceSum, decode_pieces, join, piece_ranges, piece_tag
from privacy.secure_sum import SecureSumCodec


@pytest.fixture(scope="module")
def packed() -> Codec:
    return PackedKeys.generate(PackedParams(max_silos=4)).codec()


def _in_pieces(codec: Codec, xs: list[np.ndarray], piece_values: int, factor: float) -> tuple[PieceSum, list]:
    ranges = piece_ranges(xs[0].size, piece_values, codec.chunk_values())
    sums = PieceSum(codec, len(ranges))
    for silo in reversed(range(len(xs))):  # pieces arrive in any silo order
        for index, (a, b) in enumerate(ranges):
            sums.add(index, f"s{silo}", codec.encode(xs[silo][a:b], bound=8.0, tag=f"t/{silo}", offset=a))
    return sums, sums.finish({f"s{i}" for i in range(len(xs))}, factor)


@settings(max_examples=10, deadline=None)
@given(size=st.integers(1, 30_000), silos=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_the_pieces_joined_decode_to_exactly_the_whole_sum(
    packed: Codec, size: int, silos: int, seed: int
) -> None:
    # Prepare
    rng = np.random.default_rng(seed)
    xs = [rng.uniform(-8, 8, size) for _ in range(silos)]
    whole = packed.accumulator()
    for silo, x in enumerate(xs):
        whole.add(packed.encode(x, bound=8.0, tag=f"t/{silo}"))
    # Execute: pieces of one ciphertext each
    _, done = _in_pieces(packed, xs, 1, 1.0 / silos)
    joined = join(done)
    # Assert: the same integers, so the same floats; within half a step of each value's mean
    expected = packed.decode(whole.result(1.0 / silos))
    assert np.array_equal(packed.decode(joined), expected)
    assert np.array_equal(decode_pieces(packed, iter(done), size), expected)  # one piece at a time
    as_float32 = decode_pieces(packed, done, size, np.float32)  # a float32 model's, rounded as loading it
    assert as_float32.dtype == np.float32 and np.array_equal(as_float32, expected.astype(np.float32))
    step = 8.0 / (2**15 - 1)
    assert np.max(np.abs(expected - np.mean(xs, axis=0))) <= step / 2 + 1e-12
    assert joined.nbytes == whole.result().nbytes


@pytest.mark.parametrize("codec", ["off", "ckks", "secure-sum"])
def test_plaintext_ckks_and_secure_sum_pieces_join_to_the_whole_sum(codec: str) -> None:
    c: Codec = {
        "off": PlainCodec,
        "ckks": lambda: CKKSKeys.generate(CKKSParams()).codec(),
        "secure-sum": SecureSumCodec,
    }[codec]()
    rng = np.random.default_rng(1)
    xs = [rng.normal(0, 1, 10_000) for _ in range(3)]
    _, done = _in_pieces(c, xs, 3000, 1.0 / 3)
    assert len(done) > 1
    whole = c.decode(join(done))
    np.testing.assert_allclose(whole, np.mean(xs, axis=0), atol=1e-4)
    np.testing.assert_array_equal(decode_pieces(c, done, 10_000), whole)


def test_pieces_decoded_one_at_a_time_must_cover_the_sum_exactly(packed: Codec) -> None:
    rng = np.random.default_rng(2)
    _, done = _in_pieces(packed, [rng.uniform(-8, 8, 30_000)], 1, 1.0)
    with pytest.raises(CodecError, match="hold 12288 values, the sum 30000"):
        decode_pieces(packed, done[:1], 30_000)
    with pytest.raises(CodecError, match="ends past"):
        decode_pieces(packed, done, 20_000)
    with pytest.raises(CodecError, match="must start on a ciphertext"):
        packed.decode(done[1], offset=5)


def test_a_piece_finishes_only_when_every_contributor_sent_it(packed: Codec) -> None:
    x = np.ones(30_000)
    ranges = piece_ranges(x.size, 1, packed.chunk_values())
    sums = PieceSum(packed, len(ranges))
    a, b = ranges[0]
    sums.add(0, "s0", packed.encode(x[a:b], bound=2.0, tag="t/0"))
    assert sums.finish({"s0", "s1"}, 0.5) == [] and sums.open == 1
    with pytest.raises(CodecError, match="twice"):
        sums.add(0, "s0", packed.encode(x[a:b], bound=2.0, tag="t/0"))
    sums.add(0, "s1", packed.encode(x[a:b], bound=2.0, tag="t/1"))
    assert len(sums.finish({"s0", "s1"}, 0.5)) == 1 and sums.open == 0
    with pytest.raises(CodecError, match="finished"):
        sums.add(0, "s1", packed.encode(x[a:b], bound=2.0, tag="t/1"))


def test_pieces_never_split_a_ciphertext_and_tags_name_their_place() -> None:
    assert piece_ranges(10, 3, 4) == [(0, 4), (4, 8), (8, 10)]
    assert piece_ranges(0, 5) == [(0, 0)]
    assert piece_tag("round-2/north", 0, 3) == "round-2/north#1/3"
    with pytest.raises(ValueError):
        piece_ranges(10, 0)


def test_pieces_encoded_differently_are_not_joined(packed: Codec) -> None:
    x = np.ones(30_000)
    ranges = piece_ranges(x.size, 1, packed.chunk_values())
    pieces = [
        packed.encode(x[a:b], bound=2.0 if i else 4.0, tag="t", offset=a) for i, (a, b) in enumerate(ranges)
    ]
    with pytest.raises(CodecError, match="piece 2"):
        join(pieces)
    with pytest.raises(CodecError, match="ciphertext"):
        packed.encode(x[:10], bound=2.0, tag="t", offset=5)

"""Large updates in pieces: encoded, sent, added and finished one piece at a time.

A silo encodes its update a piece at a time (``codec.encode(x[a:b], offset=a)``: the dither and
masks are drawn for those positions) and streams the pieces; the orchestrator adds piece i of
every silo into its own running sum, finishes that piece as soon as every contributor's piece i
is in, and drops its running sum. The finished pieces' chunks joined are, chunk for chunk, the
sum of the silos' whole encodings, so silos decode the result as they decode any sum.

    python -c "from privacy.codec import PlainCodec; from privacy.pieces import *; import numpy as np; \
c = PlainCodec(); x = np.arange(5.0); r = piece_ranges(5, 2); s = PieceSum(c, len(r)); \
[s.add(i, 'a', c.encode(x[a:b], tag='a', offset=a)) for i, (a, b) in enumerate(r)]; \
print(r, c.decode(join(s.finish({'a'}, 1.0))))"

The orchestrator puts each finished piece into Ray's object store at once and keeps references
(`silo.messages.StoredPayload`); a silo fetches and decodes them one at a time (`decode_pieces`),
or joins them (`join`) where the bytes must travel on as one payload.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import replace

import numpy as np

from privacy.codec import Accumulator, Codec, CodecError, Payload


def piece_size(piece_values: int, chunk_values: int = 1) -> int:
    """``piece_values`` rounded up to a whole number of chunks: a piece never splits a ciphertext."""
    if piece_values < 1 or chunk_values < 1:
        raise ValueError(f"pieces need positive sizes, got {piece_values} values, chunks of {chunk_values}")
    return -(-piece_values // chunk_values) * chunk_values


def piece_ranges(length: int, piece_values: int, chunk_values: int = 1) -> list[tuple[int, int]]:
    """[(start, end)] covering ``length`` values in pieces of `piece_size`; at least one piece."""
    size = piece_size(piece_values, chunk_values)
    return [(a, min(length, a + size)) for a in range(0, max(length, 1), size)]


def piece_tag(tag: str, index: int, count: int) -> str:
    """What a silo signs for piece ``index`` of ``count`` of the encoding ``tag``: a piece cannot
    be replayed in another place, another sum or another round."""
    return f"{tag}#{index + 1}/{count}"


class PieceSum:
    """Running sums by piece index. A piece is finished (serialized once, its running sum dropped)
    when every contributor has sent it, so only the pieces between the slowest and the fastest
    contributor are held as running sums."""

    def __init__(self, codec: Codec, count: int) -> None:
        self._codec, self.count = codec, count
        self._running: dict[int, Accumulator] = {}
        self._added: dict[int, set[str]] = {}
        self.finished = 0  # pieces finished (and handed out) so far

    @property
    def open(self) -> int:
        """Pieces held as running sums now."""
        return len(self._running)

    def add(self, index: int, silo: str, payload: Payload) -> None:
        if not self.finished <= index < self.count:
            raise CodecError(f"piece {index + 1} of {self.count} is finished or out of range")
        if silo in self._added.get(index, set()):
            raise CodecError(f"silo {silo!r} sent piece {index + 1} twice")
        if index not in self._running:
            self._running[index] = self._codec.accumulator()
        self._running[index].add(payload)
        self._added.setdefault(index, set()).add(silo)

    def finish(self, contributors: Collection[str], factor: float) -> list[Payload]:
        """Finish, in order, every piece that all ``contributors`` have sent (times ``factor``) and
        return those newly finished: the caller keeps them (this class holds running sums only)."""
        done = []
        while self.finished < self.count and set(contributors) <= self._added.get(self.finished, set()):
            done.append(self._running.pop(self.finished).result(factor))
            del self._added[self.finished]
            self.finished += 1
        return done


def check_alike(first: Payload, piece: Payload, number: int) -> None:
    """Refuse piece ``number`` (counted from 1) unless it was encoded and summed as the first."""
    if (piece.codec, piece.bound, piece.layout, piece.scale, sorted(piece.terms), piece.key_id) != (
        first.codec,
        first.bound,
        first.layout,
        first.scale,
        sorted(first.terms),
        first.key_id,
    ):  # fmt: skip (terms: added in the order pieces arrived, which differs from piece to piece)
        raise CodecError(f"piece {number} was encoded or summed differently from piece 1")


def join(pieces: list[Payload]) -> Payload:
    """The finished pieces as one payload: their chunks in order, their lengths added."""
    if not pieces:
        raise ValueError("no pieces to join")
    first = pieces[0]
    for number, piece in enumerate(pieces[1:], start=2):
        check_alike(first, piece, number)
    chunks = tuple(chunk for piece in pieces for chunk in piece.chunks)
    return replace(first, chunks=chunks, length=sum(piece.length for piece in pieces))


def decode_pieces(
    codec: Codec, pieces: Iterable[Payload], length: int, dtype: np.dtype | type = np.float64
) -> np.ndarray:
    """The finished pieces of a sum decoded one at a time into one vector of ``length`` values
    (``codec.decode(piece, offset=start)``): equal to decoding their `join`, while a decoder
    holds one piece's bytes at a time beside the result (pieces may come from a generator).
    ``dtype``: the result's (float32 for a float32 model: rounded as loading it would round)."""
    out = np.empty(length, dtype=dtype)
    start, first = 0, None
    for number, piece in enumerate(pieces, start=1):
        first = first or piece
        check_alike(first, piece, number)
        if start + piece.length > length:
            raise CodecError(f"piece {number} ends past the {length} values of the sum")
        out[start : start + piece.length] = codec.decode(piece, offset=start)
        start += piece.length
    if start != length:
        raise CodecError(f"the pieces hold {start} values, the sum {length}")
    return out

"""Codecs: how a flat float vector travels between silos and the orchestrator.

A codec turns a vector into a `Payload` (``encode``), adds payloads without
looking inside them (``add``), scales one by a public factor (``scale``) and turns
one back into a vector (``decode``). The orchestrator only ever calls ``add`` and
``scale``; for the encrypted codecs it holds a context that cannot ``decode``.

    python -c "from privacy.codec import PlainCodec; c = PlainCodec(); \
print(c.decode(c.add(c.encode([1.0, 2.0]), c.encode([3.0, 4.0]))))"
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Generic, Protocol, TypeVar

import numpy as np

T = TypeVar("T")


class CodecError(ValueError):
    """A payload that this codec cannot read: wrong scheme, wrong length, bad bytes."""


@dataclass(frozen=True)
class Payload:
    """What goes over the wire: opaque chunks plus public metadata about them."""

    codec: str  # the codec's name; a codec refuses payloads of another
    chunks: tuple[bytes, ...]
    length: int  # values in the vector
    bound: float | None = None  # quantization range (packed): every addend must share it
    layout: tuple[int, int, int] | None = None  # packed: (value bits, lanes, bits per lane)
    scale: float = 1.0  # a factor still to apply after decoding (packed scales lazily)
    terms: tuple[str, ...] = ()  # the encodings summed in, by tag: a duplicate is refused
    key_id: str = ""  # fingerprint of the key it was encrypted under ("" for plaintext)
    # Secure aggregation: masks (seed, sign) left in this sum, subtracted after decryption
    unmask: tuple[tuple[bytes, int], ...] = ()

    @property
    def nbytes(self) -> int:
        return sum(len(c) for c in self.chunks)


class Accumulator(Protocol):
    """A running sum kept decoded-from-the-wire (ciphertexts, not bytes) until ``result``."""

    def add(self, payload: Payload) -> None: ...

    def result(self, factor: float = 1.0) -> Payload:
        """The sum so far, times ``factor``, serialized once."""
        ...


class Codec(Protocol):
    """Encode/add/scale/decode; plaintext and encrypted codecs share this shape.

    ``encode`` takes the quantization range every silo agreed on (``bound``; codecs that
    do not quantize ignore it), a ``tag`` unique to this encoding, ``exact`` for the
    codec's most precise layout (federated statistics), ``masks`` (secure aggregation:
    expanded and added to the quantized integers; codecs that cannot mask refuse them) and
    ``offset``: where ``values`` start in the whole vector when a large update is encoded
    piece by piece (`privacy.pieces`); the dither and masks are drawn for those positions,
    so the pieces' chunks joined are the whole vector's encoding. ``decode(piece, offset=)``
    decodes one finished piece of a sum on its own (the dither removed for its positions).
    ``chunk_values`` is how many values one chunk holds: a piece starts on a multiple of it.
    """

    name: str
    key_id: str

    def encode(
        self,
        values: Sequence[float] | np.ndarray,
        *,
        bound: float | None = None,
        tag: str = "",
        exact: bool = False,
        masks: Sequence[tuple[bytes, int]] = (),
        offset: int = 0,
    ) -> Payload: ...

    def chunk_values(self, exact: bool = False) -> int: ...

    def accumulator(self) -> Accumulator: ...

    def add(self, a: Payload, b: Payload) -> Payload: ...

    def scale(self, a: Payload, factor: float) -> Payload: ...

    def decode(self, payload: Payload, *, offset: int = 0) -> np.ndarray: ...

    def describe(self) -> dict[str, str]:
        """Parameters worth recording (MLflow tags); never secret material."""
        ...


def check_payload(codec: str, payload: Payload, length: int | None = None, key_id: str = "") -> None:
    """Raise `CodecError` unless ``payload`` was made by ``codec`` under ``key_id`` (with ``length``)."""
    if payload.codec != codec:
        raise CodecError(f"payload was encoded with {payload.codec!r}, expected {codec!r}")
    if length is not None and payload.length != length:
        raise CodecError(f"payload holds {payload.length} values, expected {length}")
    if key_id and payload.key_id != key_id:
        raise CodecError(
            f"payload was encrypted under another key (key id {payload.key_id or 'none'}, expected {key_id})"
        )


def dither(key: bytes, tag: str, n: int, start: int = 0) -> np.ndarray:
    """Subtractive dither for the encoding ``tag``: offsets ``start`` to ``start + n`` in
    [-1/2, 1/2) steps, drawn from ``key`` and the tag, so the decoder (who knows both)
    removes exactly what was added; a block of a large vector is drawn on its own (PCG64
    advances to ``start``: one draw per value)."""
    digest = hashlib.blake2b(tag.encode(), key=key, digest_size=16).digest()
    generator = np.random.PCG64(int.from_bytes(digest, "little"))
    if start:
        generator.advance(start)
    return np.random.Generator(generator).random(n) - 0.5


def quantize(x: np.ndarray, bound: float, bits: int, offsets: np.ndarray) -> np.ndarray:
    """Signed integers of ``bits`` bits (|q| <= 2^(bits-1) - 1 before the dither) for x in [-bound, bound]."""
    levels = 2 ** (bits - 1) - 1
    return np.rint(np.clip(x, -bound, bound) * (levels / bound) + offsets).astype(np.int64)


def check_quantizable(x: np.ndarray, bound: float | None, tag: str, codec: str) -> float:
    """The checks every quantizing codec makes before encoding; returns the bound."""
    if not np.all(np.isfinite(x)):
        raise CodecError("refusing to encrypt NaN or infinite values")
    if bound is None or not bound > 0 or not np.isfinite(bound):
        raise CodecError(f"the {codec} codec needs a positive finite bound, got {bound}")
    if not tag:
        raise CodecError(f"the {codec} codec needs a tag naming this encoding (it seeds the dither)")
    return float(bound)


def unmasked(payload: Payload, masks: Sequence[tuple[bytes, int]]) -> Payload:
    """A securely aggregated sum with the masks it still holds attached (the decoder removes them)."""
    return replace(payload, unmask=tuple(masks)) if masks else payload


def refuse_masks(codec: str, masks: Sequence[tuple[bytes, int]]) -> None:
    """Codecs without integer slots cannot carry secure-aggregation masks."""
    if masks:
        raise CodecError(f"the {codec!r} codec cannot mask its values; secure aggregation needs 'packed'")


class RunningSum(Generic[T]):
    """Every codec's accumulator: admits an addend (same codec, key, length and quantization as
    the first; no encoding twice; at most ``limit`` of them), keeps the sum as loaded parts
    (ciphertexts, arrays) and serializes it once, in ``result``.

    ``load`` turns a payload into parts, ``add_into`` adds one part into another in place,
    ``dump`` serializes the parts times a factor and returns the factor still to apply (1.0
    where the codec scales eagerly; the factor itself where it scales lazily)."""

    def __init__(
        self,
        codec: str,
        key_id: str,
        load: Callable[[Payload], list[T]],
        add_into: Callable[[T, T], None],
        dump: Callable[[list[T], float], tuple[tuple[bytes, ...], float]],
        limit: int | None = None,
    ) -> None:
        self._codec, self._key_id, self._limit = codec, key_id, limit
        self._load, self._add_into, self._dump = load, add_into, dump
        self._first: Payload | None = None
        self._terms: tuple[str, ...] = ()
        self._parts: list[T] | None = None

    def _admit(self, payload: Payload) -> None:
        first = self._first
        check_payload(self._codec, payload, first.length if first else None, key_id=self._key_id)
        if payload.unmask:
            raise CodecError("a securely aggregated sum is final: it cannot be added to or scaled again")
        if first is not None and (first.bound, first.layout, first.scale) != (
            payload.bound,
            payload.layout,
            payload.scale,
        ):
            raise CodecError(
                f"payloads quantized differently (bound {first.bound} vs {payload.bound}, layout "
                f"{first.layout} vs {payload.layout}) cannot be added"
            )
        if first is not None and len(payload.chunks) != len(first.chunks):
            raise CodecError(f"payload has {len(payload.chunks)} chunks, the sum {len(first.chunks)}")
        if duplicates := sorted(set(self._terms) & set(payload.terms)):
            raise CodecError(f"duplicate contribution {duplicates}")
        count = len(self._terms) + len(payload.terms)
        if self._limit is not None and count > self._limit:
            raise CodecError(
                f"{count} contributions exceed the {self._codec} codec's headroom for {self._limit} silos "
                f"(raise [privacy.{self._codec}] max_silos)"
            )

    def add(self, payload: Payload) -> None:
        self._admit(payload)
        parts = self._load(payload)
        if self._parts is None:
            self._parts = parts
        else:
            for total, part in zip(self._parts, parts, strict=True):
                self._add_into(total, part)
        self._first = self._first or payload
        self._terms += payload.terms

    def result(self, factor: float = 1.0) -> Payload:
        first = self._first
        if self._parts is None or first is None:
            raise ValueError("nothing was added")
        chunks, pending = self._dump(self._parts, factor)
        return Payload(
            first.codec, chunks, first.length, first.bound, first.layout, first.scale * pending, self._terms,
            first.key_id,
        )  # fmt: skip


def add_pair(codec: Codec, a: Payload, b: Payload) -> Payload:
    """``codec.add`` for every codec: a two-term running sum."""
    running = codec.accumulator()
    running.add(a)
    running.add(b)
    return running.result()


def scale_one(codec: Codec, a: Payload, factor: float) -> Payload:
    """``codec.scale`` for every codec: a one-term running sum, times ``factor``."""
    running = codec.accumulator()
    running.add(a)
    return running.result(factor)


def _add_arrays(total: np.ndarray, part: np.ndarray) -> None:
    total += part


class PlainCodec:
    """No encryption: float64 values as raw bytes. The benchmark baseline."""

    name = "off"
    key_id = ""

    def encode(
        self,
        values: Sequence[float] | np.ndarray,
        *,
        bound: float | None = None,
        tag: str = "",
        exact: bool = False,
        masks: Sequence[tuple[bytes, int]] = (),
        offset: int = 0,
    ) -> Payload:
        refuse_masks(self.name, masks)
        array = np.ascontiguousarray(values, dtype=np.float64).ravel()
        return Payload(self.name, (array.tobytes(),), int(array.size), terms=(tag,) if tag else ())

    def decode(self, payload: Payload, *, offset: int = 0) -> np.ndarray:
        check_payload(self.name, payload)
        refuse_masks(self.name, payload.unmask)
        data = b"".join(payload.chunks)
        if len(data) != 8 * payload.length:
            raise CodecError(f"plaintext payload has {len(data)} bytes for {payload.length} values")
        return np.frombuffer(data, dtype=np.float64).copy()

    def chunk_values(self, exact: bool = False) -> int:
        return 1

    def accumulator(self) -> Accumulator:
        def dump(parts: list[np.ndarray], factor: float) -> tuple[tuple[bytes, ...], float]:
            return ((parts[0] * factor).tobytes(),), 1.0

        return RunningSum(self.name, "", lambda p: [self.decode(p)], _add_arrays, dump)

    def add(self, a: Payload, b: Payload) -> Payload:
        return add_pair(self, a, b)

    def scale(self, a: Payload, factor: float) -> Payload:
        return scale_one(self, a, factor)

    def describe(self) -> dict[str, str]:
        return {"scheme": "off"}

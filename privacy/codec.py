"""Codecs: how a flat float vector travels between silos and the orchestrator.

A codec turns a vector into a `Payload` (``encode``), adds payloads without
looking inside them (``add``), scales one by a public factor (``scale``) and turns
one back into a vector (``decode``). The orchestrator only ever calls ``add`` and
``scale``; for the encrypted codecs it holds a context that cannot ``decode``.

    python -c "from privacy.codec import PlainCodec; c = PlainCodec(); \
print(c.decode(c.add(c.encode([1.0, 2.0]), c.encode([3.0, 4.0]))))"
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


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

    @property
    def nbytes(self) -> int:
        return sum(len(c) for c in self.chunks)


class Codec(Protocol):
    """Encode/add/scale/decode; plaintext and encrypted codecs share this shape.

    ``encode`` takes the quantization range every silo agreed on (``bound``; codecs that
    do not quantize ignore it), a ``tag`` unique to this encoding, and ``exact`` for the
    codec's most precise layout (federated statistics).
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
    ) -> Payload: ...

    def add(self, a: Payload, b: Payload) -> Payload: ...

    def scale(self, a: Payload, factor: float) -> Payload: ...

    def decode(self, payload: Payload) -> np.ndarray: ...

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
    ) -> Payload:
        array = np.ascontiguousarray(values, dtype=np.float64).ravel()
        return Payload(self.name, (array.tobytes(),), int(array.size), terms=(tag,) if tag else ())

    def decode(self, payload: Payload) -> np.ndarray:
        check_payload(self.name, payload)
        data = b"".join(payload.chunks)
        if len(data) != 8 * payload.length:
            raise CodecError(f"plaintext payload has {len(data)} bytes for {payload.length} values")
        return np.frombuffer(data, dtype=np.float64).copy()

    def add(self, a: Payload, b: Payload) -> Payload:
        check_payload(self.name, b, a.length)
        total = self.encode(self.decode(a) + self.decode(b))
        return Payload(total.codec, total.chunks, total.length, terms=a.terms + b.terms)

    def scale(self, a: Payload, factor: float) -> Payload:
        scaled = self.encode(self.decode(a) * factor)
        return Payload(scaled.codec, scaled.chunks, scaled.length, terms=a.terms)

    def describe(self) -> dict[str, str]:
        return {"scheme": "off"}

"""Weighted aggregation, written once for every codec.

The weighting invariant has one owner, this module: a silo sends
``encode_weighted(codec, values, weight)`` = Enc(weight * values) with the weight in
the clear, and the orchestrator's `WeightedSum` adds payloads as they arrive and
returns Enc(sum(w_k x_k) / sum(w_k)). For CKKS every step runs on ciphertexts.

    python -c "from privacy.codec import PlainCodec; from privacy.aggregate import *; \
c = PlainCodec(); s = WeightedSum(c); s.add(encode_weighted(c, [1.0], 3)); \
s.add(encode_weighted(c, [5.0], 1)); print(c.decode(s.mean()))"   # [2.]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from privacy.codec import Codec, CodecError, Payload


@dataclass(frozen=True)
class WeightedPayload:
    payload: Payload  # Enc(weight * values)
    weight: float  # public: the orchestrator needs it to normalise


def check_weight(weight: float) -> None:
    """The orchestrator's check of a weight a silo claims: a zero, negative or non-finite weight
    would let one silo cancel, invert or swamp the others (CodecError: the update is refused)."""
    if not (np.isfinite(weight) and weight > 0):
        raise CodecError(f"aggregation weight {weight!r} is not a positive finite number")


def bound_hint(values: Sequence[float] | np.ndarray, weight: float = 1.0) -> float:
    """What a silo proposes as the shared quantization range for ``weight * values``: the next
    power of two at or above its largest magnitude (only the exponent is revealed)."""
    array = np.asarray(values)
    high = float(np.max(array, initial=0.0))  # max and min: no |values| copy of a large update
    peak = max(high, -float(np.min(array, initial=0.0))) * abs(weight)
    if not np.isfinite(peak):
        raise ValueError("values are not finite")
    return float(2.0 ** np.ceil(np.log2(max(peak, 2.0**-30))))


def encode_weighted(
    codec: Codec,
    values: Sequence[float] | np.ndarray,
    weight: float,
    *,
    bound: float | None = None,
    tag: str = "",
    exact: bool = False,
    masks: Sequence[tuple[bytes, int]] = (),
    offset: int = 0,
) -> WeightedPayload:
    """Enc(weight * values); ``bound`` is the range every silo agreed on (see `bound_hint`);
    ``masks``: secure aggregation's, added to the quantized integers before encryption;
    ``offset``: where ``values`` start in the whole update (a piece of it, `privacy.pieces`)."""
    check_weight(weight)
    scaled = np.asarray(values, dtype=np.float64) * weight
    return WeightedPayload(
        codec.encode(scaled, bound=bound, tag=tag, exact=exact, masks=masks, offset=offset), float(weight)
    )


class WeightedSum:
    """Streaming sum: one running sum held as ciphertexts, never every silo's payload at once."""

    def __init__(self, codec: Codec) -> None:
        self._running = codec.accumulator()
        self.weight = 0.0
        self.count = 0

    def add(self, item: WeightedPayload) -> None:
        self._running.add(item.payload)
        self.weight += item.weight
        self.count += 1

    def total(self) -> Payload:
        """Enc(sum_k w_k x_k)."""
        return self._running.result()

    def mean(self) -> Payload:
        """Enc(sum_k w_k x_k / sum_k w_k)."""
        if self.count == 0:
            raise ValueError("nothing was added")
        return self._running.result(1.0 / self.weight)


def aggregate(codec: Codec, items: Sequence[WeightedPayload]) -> Payload:
    """The weighted mean of ``items``; the same call for plaintext and ciphertexts."""
    running = WeightedSum(codec)
    for item in items:
        running.add(item)
    return running.mean()

"""A secure sum without HE (``he = "off"`` with ``secagg = "pairwise"``), like Flower's SecAgg+.

Each silo quantizes its vector to signed integers (32 bits for updates, 52 for the exact
statistics, subtractively dithered as the packed codec does, from a public key: the
dither only has to be independent of the values), adds its secure-aggregation masks mod
2^62 and sends the words. The orchestrator adds words mod 2^62; once the masks left in
the sum are rebuilt (`privacy.secagg`) it decodes the sum itself: it sees the aggregate,
never one silo's update. The sum then travels on as a plaintext payload.

    python -c "from privacy.secure_sum import SecureSumCodec; c = SecureSumCodec(); \
print(c.decode(c.add(c.encode([0.5, -1.0], bound=2, tag='a'), c.encode([1.5, 0.25], bound=2, tag='b'))))"
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from privacy.codec import (
    Accumulator,
    CodecError,
    Payload,
    RunningSum,
    add_pair,
    check_payload,
    check_quantizable,
    dither,
    quantize,
    scale_one,
)
from privacy.masking import Mask, add_mod, combined, sub_mod

MODULUS = 2**62  # words and masks live mod 2^62; a sum of signed values stays within +-2^61
UPDATE_BITS = 32  # the step is bound / (2^31 - 1): finer than float32 near the bound
EXACT_BITS = 52  # federated statistics: float64's integer range
MAX_TERMS = 2 ** (62 - 1 - EXACT_BITS)  # 512 exact 52-bit terms before the sum could wrap
_DITHER_KEY = b"fedsilo-secure-sum-public-dither"


class SecureSumCodec:
    """Quantized, masked integers in the clear: only the sum of every mask's silo decodes."""

    name = "secure-sum"
    key_id = ""

    def encode(
        self,
        values: Sequence[float] | np.ndarray,
        *,
        bound: float | None = None,
        tag: str = "",
        exact: bool = False,
        masks: Sequence[Mask] = (),
        offset: int = 0,
    ) -> Payload:
        x = np.asarray(values, dtype=np.float64).ravel()
        bound = check_quantizable(x, bound, tag, self.name)
        if offset and masks:
            raise CodecError("the secure-sum codec masks whole vectors, not pieces")
        bits = EXACT_BITS if exact else UPDATE_BITS
        offsets = dither(_DITHER_KEY, tag, x.size, start=offset)
        words = quantize(x, bound, bits, offsets).view(np.uint64) & np.uint64(MODULUS - 1)
        if masks:
            words = add_mod(words, combined(masks, x.size, MODULUS), MODULUS)
        return Payload(
            self.name, (words.tobytes(),), int(x.size), bound=bound, layout=(bits, 1, 62), terms=(tag,)
        )

    def chunk_values(self, exact: bool = False) -> int:
        return 1

    def _words(self, payload: Payload) -> np.ndarray:
        check_payload(self.name, payload)
        data = b"".join(payload.chunks)
        if len(data) != 8 * payload.length:
            raise CodecError(f"secure-sum payload has {len(data)} bytes for {payload.length} values")
        words = np.frombuffer(data, dtype="<u8").copy()
        if np.any(words >= np.uint64(MODULUS)):
            raise CodecError("secure-sum payload holds a word outside [0, 2^62)")
        return words

    def accumulator(self) -> Accumulator:
        def add_into(total: np.ndarray, part: np.ndarray) -> None:
            total[:] = add_mod(total, part, MODULUS)

        def dump(parts: list[np.ndarray], factor: float) -> tuple[tuple[bytes, ...], float]:
            return (parts[0].tobytes(),), factor  # integers: scaled after decoding

        return RunningSum(self.name, "", lambda p: [self._words(p)], add_into, dump, limit=MAX_TERMS)

    def add(self, a: Payload, b: Payload) -> Payload:
        return add_pair(self, a, b)

    def scale(self, a: Payload, factor: float) -> Payload:
        return scale_one(self, a, factor)

    def decode(self, payload: Payload, *, offset: int = 0) -> np.ndarray:
        """The sum, once its masks are attached (`Payload.unmask`); a single masked upload, or a
        sum whose masks are missing, decodes to noise."""
        if payload.layout is None or payload.bound is None:
            raise CodecError("secure-sum payload without its quantization layout")
        if offset and payload.unmask:
            raise CodecError("the secure-sum codec unmasks whole vectors, not pieces")
        words = self._words(payload)
        if payload.unmask:
            words = sub_mod(words, combined(payload.unmask, words.size, MODULUS), MODULUS)
        signed = words.astype(np.int64)
        signed[words >= np.uint64(MODULUS // 2)] -= MODULUS
        offsets = np.zeros(payload.length)
        for tag in sorted(payload.terms):  # the same floats in any arrival order
            offsets += dither(_DITHER_KEY, tag, payload.length, start=offset)
        bits = payload.layout[0]
        step = payload.bound / (2 ** (bits - 1) - 1)
        return (signed.astype(np.float64) - offsets) * step * payload.scale

    def describe(self) -> dict[str, str]:
        return {"scheme": "off", "uploads": f"quantized ({UPDATE_BITS} bits), masked mod 2^62"}

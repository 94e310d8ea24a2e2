"""CKKS homomorphic encryption through TenSEAL, behind the `Codec` interface.

Silos hold a secret context (`CKKSKeys.generate()`); the orchestrator gets
`public_bytes()`, which carries the encryption parameters only: no secret key, no
public key, no relinearization or Galois keys (sums and plain scaling need none of
them, and Galois keys alone would make it about 20x larger).

    python -c "from privacy.he import CKKSKeys; k = CKKSKeys.generate(); \
print(len(k.public_bytes()), k.codec().describe())"
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

import numpy as np
import tenseal as ts

from privacy.codec import (
    Accumulator,
    CodecError,
    Payload,
    RunningSum,
    add_pair,
    check_payload,
    refuse_masks,
    scale_one,
)
from privacy.params import CKKSParams

logger = logging.getLogger(__name__)


class CKKSCodec:
    """Encodes a vector as ceil(len / slots) CKKS ciphertexts."""

    name = "ckks"

    def __init__(self, context: ts.Context, params: CKKSParams, key_id: str = "") -> None:
        self._context = context
        self.params = params
        self.key_id = key_id

    @property
    def can_decrypt(self) -> bool:
        return bool(self._context.is_private())

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
        """``bound``, ``exact`` and ``offset`` do not apply: CKKS encodes floats at its fixed scale."""
        refuse_masks(self.name, masks)
        array = np.asarray(values, dtype=np.float64).ravel()
        if not np.all(np.isfinite(array)):
            raise CodecError("refusing to encrypt NaN or infinite values")
        slots = self.params.slots
        chunks = tuple(
            ts.ckks_vector(self._context, array[i : i + slots].tolist()).serialize()
            for i in range(0, max(array.size, 1), slots)
        )
        return Payload(self.name, chunks, int(array.size), terms=(tag,) if tag else (), key_id=self.key_id)

    def chunk_values(self, exact: bool = False) -> int:
        return self.params.slots

    def _load(self, payload: Payload) -> list[ts.CKKSVector]:
        check_payload(self.name, payload, key_id=self.key_id)
        try:
            return [ts.ckks_vector_from(self._context, chunk) for chunk in payload.chunks]
        except Exception as err:  # TenSEAL raises bare ValueError/RuntimeError
            raise CodecError(f"unreadable CKKS ciphertext: {err}") from err

    def accumulator(self) -> Accumulator:
        def dump(vectors: list[ts.CKKSVector], factor: float) -> tuple[tuple[bytes, ...], float]:
            # Homomorphic: x (1/sum n) on the ciphertexts, one rescale (and a smaller download).
            scaled = vectors if factor == 1.0 else [v * factor for v in vectors]
            return tuple(v.serialize() for v in scaled), 1.0

        return RunningSum(self.name, self.key_id, self._load, lambda total, v: total.add_(v), dump)

    def add(self, a: Payload, b: Payload) -> Payload:
        return add_pair(self, a, b)

    def scale(self, a: Payload, factor: float) -> Payload:
        return scale_one(self, a, factor)

    def decode(self, payload: Payload, *, offset: int = 0) -> np.ndarray:
        if not self.can_decrypt:
            raise CodecError("this CKKS context holds no secret key and cannot decrypt")
        refuse_masks(self.name, payload.unmask)
        values = [np.asarray(v.decrypt(), dtype=np.float64) for v in self._load(payload)]
        flat = np.concatenate(values) if values else np.zeros(0)
        return flat[: payload.length]

    def describe(self) -> dict[str, str]:
        return {
            "scheme": "ckks",
            "poly_modulus_degree": str(self.params.poly_modulus_degree),
            "coeff_mod_bit_sizes": ",".join(map(str, self.params.coeff_mod_bit_sizes)),
            "scale_bits": str(self.params.scale_bits),
            "galois_keys": "none",
            "key_id": self.key_id,
        }


class CKKSKeys:
    """A secret CKKS context. Lives only inside silo processes; never pickled."""

    def __init__(self, context: ts.Context, params: CKKSParams) -> None:
        if not context.is_private():
            raise CodecError("CKKSKeys needs a context with a secret key")
        self._context = context
        self.params = params
        self.key_id = hashlib.blake2b(
            self.secret_bytes(), person=b"fedsilo-key-id", digest_size=8
        ).hexdigest()

    @classmethod
    def generate(cls, params: CKKSParams | None = None) -> CKKSKeys:
        params = params or CKKSParams()
        context = ts.context(
            ts.SCHEME_TYPE.CKKS,
            poly_modulus_degree=params.poly_modulus_degree,
            coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
        )
        context.global_scale = 2**params.scale_bits
        return cls(context, params)

    def secret_bytes(self) -> bytes:
        """The whole secret context; only ever leaves a silo sealed to a peer."""
        return bytes(
            self._context.serialize(save_secret_key=True, save_galois_keys=False, save_relin_keys=False)
        )

    @classmethod
    def from_secret_bytes(cls, data: bytes, params: CKKSParams) -> CKKSKeys:
        return cls(ts.context_from(data), params)

    def public_bytes(self) -> bytes:
        """Parameters only: enough to add and scale ciphertexts, nothing to decrypt."""
        return bytes(
            self._context.serialize(
                save_public_key=False,
                save_secret_key=False,
                save_galois_keys=False,
                save_relin_keys=False,
            )
        )

    def codec(self, workers: int = 1) -> CKKSCodec:  # TenSEAL's CKKS vectors: one process
        return CKKSCodec(self._context, self.params, self.key_id)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("CKKSKeys hold a secret key and must never be pickled")


def public_codec(public_bytes: bytes, params: CKKSParams, key_id: str = "") -> CKKSCodec:
    """The orchestrator's codec. Refuses a context that carries a secret key."""
    context = ts.context_from(public_bytes)
    if context.is_private():
        raise CodecError("the orchestrator was handed a context with a secret key; refusing it")
    context.global_scale = 2**params.scale_bits
    return CKKSCodec(context, params, key_id)

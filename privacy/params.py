"""Encryption parameters: plain values, importable without TenSEAL (pipeline building, benchmarks)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CKKSParams:
    # 8192 gives 4096 slots per ciphertext and room for a 160-bit modulus chain.
    poly_modulus_degree: int = 8192
    # [60, 40, 60]: one 40-bit level for the orchestrator's x(1/sum n) rescale, a
    # 60-bit base prime so aggregated values up to ~2^19 decrypt exactly, and the
    # 60-bit special prime for key switching.
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 40, 60)
    # 2^40: about 1e-7 absolute precision on model weights.
    scale_bits: int = 40

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2


@dataclass(frozen=True)
class PackedParams:
    """BFV with quantized values packed several to a plaintext slot (BatchCrypt's idea)."""

    # 4096 slots per ciphertext; SEAL's 128-bit-secure modulus for it is 109 bits.
    poly_modulus_degree: int = 4096
    # The batching prime t just under 2^60 holds 3 lanes of 19 bits.
    plain_modulus_bits: int = 60
    # 16-bit quantization of updates: the step is bound / 32767.
    value_bits: int = 16
    # Headroom: a lane holds the sum of this many silos' values without carrying over.
    max_silos: int = 8

    @property
    def headroom_bits(self) -> int:
        return max(0, (self.max_silos - 1).bit_length())

    @property
    def lane_bits(self) -> int:
        return self.value_bits + self.headroom_bits

    @property
    def lanes(self) -> int:
        # t >= 2^(bits-1), so lanes * lane_bits <= bits - 1 keeps every packed slot below t.
        return (self.plain_modulus_bits - 1) // self.lane_bits

    @property
    def exact_value_bits(self) -> int:
        """One lane per slot, every bit used: for federated statistics."""
        return self.plain_modulus_bits - 1 - self.headroom_bits

    @property
    def values_per_ciphertext(self) -> int:
        return self.poly_modulus_degree * self.lanes

    def check(self) -> None:
        if self.lanes < 1:
            raise ValueError(
                f"{self.value_bits}-bit values with headroom for {self.max_silos} silos need "
                f"{self.lane_bits} bits per lane; a {self.plain_modulus_bits}-bit plain modulus has "
                f"{self.plain_modulus_bits - 1}"
            )


@dataclass(frozen=True)
class HEConfig:
    scheme: str = "packed"  # packed (default) | ckks | off
    ckks: CKKSParams = CKKSParams()
    packed: PackedParams = PackedParams()

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

"""Masks for secure aggregation: a seed expanded into uniform integers mod a modulus.

AES-256-CTR from `cryptography` (keyed by the 32-byte seed, zero nonce: every seed keys
one stream) draws 64-bit words; each is cut to the modulus's bit length and words at or
above the modulus are rejected, so every mask value is uniform in [0, modulus). Masks
are added to quantized integers before encryption and subtracted after decryption.

    python -c "from privacy.masking import expand; print(expand(bytes(32), 4, 97))"
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

Mask = tuple[bytes, int]  # (32-byte seed, +1 or -1): how the expanded mask enters a sum

SEED_BYTES = 32


def expand(seed: bytes, count: int, modulus: int) -> np.ndarray:
    """``count`` uniform integers in [0, modulus) (uint64), the same for the same seed."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a mask seed has {SEED_BYTES} bytes, got {len(seed)}")
    if not 2 <= modulus <= 2**63:
        raise ValueError(f"mask modulus {modulus} out of range")
    bits = (modulus - 1).bit_length()
    keep = np.uint64((1 << bits) - 1)
    stream = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    out = np.empty(count, dtype=np.uint64)
    filled = 0
    while filled < count:
        want = count - filled
        draw = want + (want >> 4) + 16  # rejection leaves at least half of the draws
        buffer = bytearray(8 * draw + 15)  # update_into wants room for one block more
        stream.update_into(bytes(8 * draw), buffer)
        words = np.frombuffer(buffer, dtype="<u8", count=draw) & keep
        words = words[words < np.uint64(modulus)][:want]
        out[filled : filled + words.size] = words
        filled += words.size
    return out


def combined(masks: Sequence[Mask], count: int, modulus: int) -> np.ndarray:
    """The sum of signed masks mod ``modulus`` (what they add to a vector of ``count`` values)."""
    total = np.zeros(count, dtype=np.uint64)
    for seed, sign in masks:
        if sign not in (1, -1):
            raise ValueError(f"a mask's sign is +1 or -1, got {sign}")
        m = expand(seed, count, modulus)
        total = add_mod(total, m, modulus) if sign > 0 else sub_mod(total, m, modulus)
    return total


def add_mod(values: np.ndarray, mask: np.ndarray, modulus: int) -> np.ndarray:
    """(values + mask) mod modulus for values and mask below modulus <= 2^63 (no uint64 wrap;
    a compare and subtract instead of numpy's slow 64-bit ``%``)."""
    q = np.uint64(modulus)
    total = values + mask
    total -= q * (total >= q)
    return total


def sub_mod(values: np.ndarray, mask: np.ndarray, modulus: int) -> np.ndarray:
    """(values - mask) mod modulus for values and mask below modulus."""
    q = np.uint64(modulus)
    total = values + (q - mask)
    total -= q * (total >= q)
    return total

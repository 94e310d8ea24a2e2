"""Masks for secure aggregation: a seed expanded into uniform integers mod a modulus.

AES-256-CTR from `cryptography` (keyed by the 32-byte seed) draws 64-bit words; each is
cut to the modulus's bit length and words at or above the modulus are rejected, so every
mask value is uniform in [0, modulus). A vector is masked row by row (a row: one
ciphertext's slots, or `ROW` values), row r from its own counter block (r * 2^64 on), so a
codec can mask and unmask a large model block by block. Masks are added to quantized
integers before encryption and subtracted after decryption.

    python -c "from privacy.masking import expand; print(expand(bytes(32), 4, 97))"
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

Mask = tuple[bytes, int]  # (32-byte seed, +1 or -1): how the expanded mask enters a sum

SEED_BYTES = 32
ROW = 4096  # values per mask row where a codec has no ciphertext rows of its own


def expand(seed: bytes, count: int, modulus: int, row: int = 0) -> np.ndarray:
    """``count`` uniform integers in [0, modulus) (uint64): row ``row`` of the seed's mask."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a mask seed has {SEED_BYTES} bytes, got {len(seed)}")
    if not 2 <= modulus <= 2**63:
        raise ValueError(f"mask modulus {modulus} out of range")
    bits = (modulus - 1).bit_length()
    keep = np.uint64((1 << bits) - 1)
    stream = Cipher(algorithms.AES(seed), modes.CTR((row << 64).to_bytes(16, "big"))).encryptor()
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


def combined(
    masks: Sequence[Mask], count: int, modulus: int, row_length: int = ROW, first_row: int = 0
) -> np.ndarray:
    """The sum of signed masks mod ``modulus`` over ``count`` values that start at row
    ``first_row`` of rows of ``row_length`` (what the masks add to that block of a vector)."""
    total = np.zeros(count, dtype=np.uint64)
    rows = -(-count // row_length)
    for seed, sign in masks:
        if sign not in (1, -1):
            raise ValueError(f"a mask's sign is +1 or -1, got {sign}")
        parts = [
            expand(seed, min(row_length, count - r * row_length), modulus, first_row + r) for r in range(rows)
        ]
        m = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
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

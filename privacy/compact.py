"""The packed codec's wire format: c0 words bit-packed to their moduli, plus the seeds of c1.

SEAL serializes a seeded BFV ciphertext as a zstd frame holding c0 (N x k 64-bit words, limb
by limb) and the 64-byte seed from which c1 is regenerated. Here the words of limb j travel
packed at q_j's bit length (36 bits for N = 4096 instead of 64), and a ciphertext is

    b"FSC1" | u32 count | count x (u8 PRNG type | 64-byte seed) | packed c0

A fresh encryption carries one seed. A sum carries the seeds of all its addends and the sum of
their c0 words: the orchestrator adds words with numpy (no SEAL object, no key), and only a
silo, which decrypts, regenerates each c1 from its seed through SEAL's own loader and adds them.
The download is then one packed polynomial plus 65 bytes per silo, not two polynomials.

    python -c "from privacy.compact import WordLayout; import numpy as np; \
w = WordLayout(4, (2**36 - 5, 2**36 - 17)); x = np.arange(8, dtype=np.uint64).reshape(2, 4); \
print(w.unpack(w.pack(x)))"
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from privacy.codec import CodecError

MAGIC = b"FSC1"
SEED_BYTES = 65  # the PRNG type (SEAL's prng_type) and its 64-byte seed
_SEAL_MAGIC = 0xA15E
_SEAL_HEADER = struct.Struct("<HBBBBHQ")  # magic, header size, version major, minor, compression, -, size
_COMPR_NONE, _COMPR_ZSTD = 0, 2
_MEMBERS = 73  # parms_id (32), is_ntt_form (1), size, degree, limbs, scale, correction factor (8 each)


@dataclass(frozen=True)
class WordLayout:
    """How the c0 words of one ciphertext are bit-packed: limb j at ``moduli[j].bit_length()`` bits."""

    degree: int  # N, coefficients per limb
    moduli: tuple[int, ...]  # the ciphertext's coefficient moduli (the special prime excluded)

    @property
    def bits(self) -> tuple[int, ...]:
        return tuple(q.bit_length() for q in self.moduli)

    @property
    def packed_bytes(self) -> int:
        return sum(self.degree * b // 8 for b in self.bits)

    def pack(self, words: np.ndarray) -> bytes:
        """(limbs, N) words, each below its limb's modulus, as packed bytes."""
        return b"".join(_pack(words[j], b) for j, b in enumerate(self.bits))

    def unpack(self, data: bytes | memoryview) -> np.ndarray:
        if len(data) != self.packed_bytes:
            raise CodecError(f"packed c0 has {len(data)} bytes, expected {self.packed_bytes}")
        out = np.empty((len(self.moduli), self.degree), dtype=np.uint64)
        offset = 0
        for j, b in enumerate(self.bits):
            size = self.degree * b // 8
            out[j] = _unpack(data[offset : offset + size], b, self.degree)
            offset += size
        return out

    def reduce(self, words: np.ndarray) -> np.ndarray:
        """Unreduced sums of words (each limb below count * q_j) mod q_j."""
        return words % np.array(self.moduli, dtype=np.uint64)[:, None]


def _group(bits: int) -> tuple[int, int]:
    """(values per group, 64-bit words per group): a group of values fills whole bytes."""
    per_group = 8 // math.gcd(bits, 8)
    return per_group, -(-per_group * bits // 64)


def _pack(values: np.ndarray, bits: int) -> bytes:
    per_group, words = _group(bits)
    v = values.reshape(-1, per_group)
    out = np.zeros((v.shape[0], words + 1), dtype=np.uint64)
    for j in range(per_group):
        offset = j * bits
        word, shift = divmod(offset, 64)
        out[:, word] |= v[:, j] << np.uint64(shift)
        if shift + bits > 64:
            out[:, word + 1] |= v[:, j] >> np.uint64(64 - shift)
    return out.view(np.uint8).reshape(v.shape[0], -1)[:, : per_group * bits // 8].tobytes()


def _unpack(data: bytes | memoryview, bits: int, count: int) -> np.ndarray:
    per_group, words = _group(bits)
    group_bytes = per_group * bits // 8
    raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, group_bytes)
    padded = np.zeros((raw.shape[0], (words + 1) * 8), dtype=np.uint8)
    padded[:, :group_bytes] = raw
    w = padded.view(np.uint64)
    mask = np.uint64((1 << bits) - 1)
    out = np.empty((raw.shape[0], per_group), dtype=np.uint64)
    for j in range(per_group):
        word, shift = divmod(j * bits, 64)
        value = w[:, word] >> np.uint64(shift)
        if shift + bits > 64:
            value |= w[:, word + 1] << np.uint64(64 - shift)
        out[:, j] = value & mask
    return out.reshape(-1)[:count]


@dataclass(frozen=True)
class Compact:
    """One ciphertext on the wire: the (possibly summed) c0 words and the seeds of its c1s."""

    seeds: tuple[bytes, ...]
    words: np.ndarray  # (limbs, N) uint64; unreduced while the orchestrator sums

    def to_bytes(self, layout: WordLayout) -> bytes:
        head = MAGIC + struct.pack("<I", len(self.seeds))
        return head + b"".join(self.seeds) + layout.pack(layout.reduce(self.words))

    @classmethod
    def from_bytes(cls, data: bytes, layout: WordLayout) -> Compact:
        if data[:4] != MAGIC or len(data) < 8:
            raise CodecError("not a fedsilo packed ciphertext (bad magic)")
        (count,) = struct.unpack_from("<I", data, 4)
        expected = 8 + count * SEED_BYTES + layout.packed_bytes
        if count < 1 or len(data) != expected:
            raise CodecError(
                f"packed ciphertext has {len(data)} bytes, expected {expected} for {count} seed(s)"
            )
        seeds = tuple(data[8 + i * SEED_BYTES : 8 + (i + 1) * SEED_BYTES] for i in range(count))
        words = layout.unpack(memoryview(data)[8 + count * SEED_BYTES :])
        if np.any(words >= np.array(layout.moduli, dtype=np.uint64)[:, None]):
            raise CodecError("packed ciphertext has a word at or above its modulus")
        return cls(seeds, words)


@dataclass(frozen=True)
class SealTemplate:
    """What a SEAL seeded ciphertext of these parameters looks like around its words and seed:
    taken from one real ciphertext, so that silos can hand SEAL (c0, seed) to load and expand."""

    members: bytes  # the 73 bytes of Ciphertext members before the word array
    array_header: bytes  # SEAL's header of the half-size word array
    info_header: bytes  # SEAL's header of the PRNG info (type and seed)
    version: tuple[int, int]

    @classmethod
    def parse(cls, blob: bytes, layout: WordLayout) -> tuple[SealTemplate, np.ndarray, bytes]:
        """A SEAL seeded ciphertext -> (its template, c0 as (limbs, N) words, its seed)."""
        body, version = _seal_body(blob)
        n = len(layout.moduli) * layout.degree
        array_at = _MEMBERS + _SEAL_HEADER.size
        (count,) = struct.unpack_from("<Q", body, array_at)
        if count != n:
            raise CodecError(f"SEAL ciphertext has {count} words in c0, expected {n} (not seeded?)")
        words = np.frombuffer(body, dtype=np.uint64, count=n, offset=array_at + 8).reshape(
            len(layout.moduli), -1
        )
        info_at = array_at + 8 + 8 * n
        info_header, seed = body[info_at : info_at + _SEAL_HEADER.size], body[info_at + _SEAL_HEADER.size :]
        if len(seed) != SEED_BYTES:
            raise CodecError(f"SEAL ciphertext carries {len(seed)} bytes of PRNG info, expected {SEED_BYTES}")
        template = cls(body[:_MEMBERS], body[_MEMBERS:array_at], info_header, version)
        return template, words.copy(), bytes(seed)

    def blob(self, words: np.ndarray, seed: bytes) -> bytes:
        """An uncompressed SEAL seeded ciphertext holding ``words`` as c0 (SEAL's loader expands
        c1 from ``seed``)."""
        body = b"".join(
            (self.members, self.array_header, struct.pack("<Q", words.size),
             np.ascontiguousarray(words, dtype=np.uint64).tobytes(), self.info_header, seed)
        )  # fmt: skip
        size = _SEAL_HEADER.size + len(body)
        return _SEAL_HEADER.pack(_SEAL_MAGIC, _SEAL_HEADER.size, *self.version, _COMPR_NONE, 0, size) + body


def _seal_body(blob: bytes) -> tuple[bytes, tuple[int, int]]:
    magic, header_size, major, minor, compression, _, size = _SEAL_HEADER.unpack_from(blob)
    if magic != _SEAL_MAGIC or header_size != _SEAL_HEADER.size or size != len(blob):
        raise CodecError("not a SEAL serialization")
    if compression == _COMPR_NONE:
        return blob[_SEAL_HEADER.size :], (major, minor)
    if compression != _COMPR_ZSTD:
        raise CodecError(f"SEAL serialization compressed with mode {compression}; only zstd is read")
    import zstandard

    return zstandard.ZstdDecompressor().decompress(blob[_SEAL_HEADER.size :], max_output_size=1 << 26), (
        major,
        minor,
    )

"""The packed codec: quantized updates, several values per BFV slot, seeded ciphertexts.

BatchCrypt's idea on SEAL's BFV (through ``tenseal.sealapi``): each value is quantized
to ``value_bits`` with a range (``bound``) shared by every silo, offset to an unsigned
integer, and ``lanes`` values share one plaintext slot, each lane with headroom bits so
that the sum of up to ``max_silos`` silos never carries into the next lane. Silos
encrypt with the secret key (symmetric BFV), which SEAL serializes as a seed plus one
polynomial: half a ciphertext on the way up. The orchestrator adds ciphertexts with
the encryption parameters alone and cannot decrypt; scaling by 1/sum(n) is recorded in
the payload and applied by the silos after decryption.

Rounding is subtractively dithered: each encoding adds a pseudo-random offset in
[-1/2, 1/2) steps before rounding, drawn from a key that only silos hold and the
encoding's tag, and the decoder removes the sum of those offsets. The error of every
value is then uniform in half a step either way and independent of the value: unbiased,
like stochastic rounding, and never more than half a step.

    python -c "from privacy.packed import PackedKeys; k = PackedKeys.generate(); c = k.codec(); \
print(c.decode(c.add(c.encode([0.5, -1.0], bound=2, tag='a'), c.encode([1.5, 0.25], bound=2, tag='b'))))"
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import tenseal.sealapi as seal

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
from privacy.compact import Compact, SealTemplate, WordLayout
from privacy.masking import Mask, add_mod, combined, sub_mod
from privacy.packed_workers import Workers, decrypt_chunks, encrypt_rows
from privacy.params import PackedParams

A = TypeVar("A")
R = TypeVar("R")

# float64 holds integers exactly up to 2^53: the exact (statistics) layout stays below.
MAX_EXACT_BITS = 52
# Ciphertexts encoded or decoded at a time: a silo's temporaries stay at about 25 MB however
# large the model (64 ciphertexts of 4096 slots, 3 lanes: 786,432 values).
BLOCK = 64


class _SealFiles:
    """SEAL objects to and from bytes. The bindings only save to and load from paths, so each
    call goes through its own temporary file (0600, on tmpfs where there is one), removed at once."""

    def __init__(self) -> None:
        shm = Path("/dev/shm")
        self._dir = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None

    def _temp(self) -> str:
        handle, path = tempfile.mkstemp(prefix="fedsilo-seal-", dir=self._dir)
        os.close(handle)
        return path

    def dump(self, obj: Any) -> bytes:
        path = self._temp()
        try:
            obj.save(path)
            return Path(path).read_bytes()
        finally:
            os.unlink(path)

    def load(self, obj: Any, context: Any, data: bytes) -> Any:
        path = self._temp()
        try:
            Path(path).write_bytes(data)
            if context is None:
                obj.load(path)
            else:
                obj.load(context, path)
            return obj
        finally:
            os.unlink(path)


def _encryption_parameters(params: PackedParams) -> seal.EncryptionParameters:
    params.check()
    parms = seal.EncryptionParameters(seal.SCHEME_TYPE.BFV)
    parms.set_poly_modulus_degree(params.poly_modulus_degree)
    parms.set_coeff_modulus(
        seal.CoeffModulus.BFVDefault(params.poly_modulus_degree, seal.SEC_LEVEL_TYPE.TC128)
    )
    parms.set_plain_modulus(seal.PlainModulus.Batching(params.poly_modulus_degree, params.plain_modulus_bits))
    return parms


def _context(parms: seal.EncryptionParameters) -> seal.SEALContext:
    context = seal.SEALContext(parms, True, seal.SEC_LEVEL_TYPE.TC128)
    if not context.parameters_set():
        raise CodecError(f"invalid BFV parameters: {context.parameters_error_message()}")
    return context


class PackedCodec:
    """Encode/add/scale/decode for packed BFV. Without a secret key it can only add and scale."""

    name = "packed"

    def __init__(
        self,
        params: PackedParams,
        parms: seal.EncryptionParameters,
        key_id: str,
        secret: seal.SecretKey | None = None,
        dither_key: bytes = b"",
        workers: Workers | None = None,
    ) -> None:
        self.params = params
        self.key_id = key_id
        self._files = _SealFiles()
        self._context = _context(parms)
        self._evaluator = seal.Evaluator(self._context)
        self._encoder = seal.BatchEncoder(self._context)
        self._encryptor = seal.Encryptor(self._context, secret) if secret is not None else None
        self._decryptor = seal.Decryptor(self._context, secret) if secret is not None else None
        self._dither_key = dither_key
        self._workers = workers  # encryption processes (cpus_per_silo >= 2); None: this process
        self._slots = params.poly_modulus_degree
        moduli = self._context.first_context_data().parms().coeff_modulus()
        self.words = WordLayout(params.poly_modulus_degree, tuple(m.value() for m in moduli))
        self._template: SealTemplate | None = None  # from this silo's first encryption
        self.plain_modulus = int(parms.plain_modulus().value())  # t: slots and masks live mod t

    @property
    def can_decrypt(self) -> bool:
        return self._decryptor is not None

    def _layout(self, exact: bool) -> tuple[int, int, int]:
        """(value bits, lanes per slot, bits per lane)."""
        p = self.params
        if exact:
            bits = min(MAX_EXACT_BITS, p.exact_value_bits)
            return bits, 1, bits + p.headroom_bits
        return p.value_bits, p.lanes, p.lane_bits

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
        if self._encryptor is None:
            raise CodecError("this context holds no secret key and cannot encrypt")
        x = np.asarray(values, dtype=np.float64).ravel()
        bound = check_quantizable(x, bound, tag, "packed")
        bits, lanes, lane_bits = self._layout(exact)
        per_ct, t = lanes * self._slots, self.plain_modulus
        if offset % per_ct:
            raise CodecError(f"a piece must start on a ciphertext ({per_ct} values), not at {offset}")
        count = max(1, -(-x.size // per_ct))
        shifts = (np.arange(lanes, dtype=np.uint64) * np.uint64(lane_bits))[None, :, None]

        def blocks() -> Iterator[np.ndarray]:  # a block at a time: temporaries stay small
            for first in range(0, count, BLOCK):
                rows = min(BLOCK, count - first)
                a, b = first * per_ct, min(x.size, (first + rows) * per_ct)
                q = quantize(x[a:b], bound, bits, dither(self._dither_key, tag, b - a, start=offset + a))
                padded = np.zeros(rows * per_ct, dtype=np.uint64)
                padded[: b - a] = (q + 2 ** (bits - 1)).astype(np.uint64)  # 1 .. 2^bits - 1
                slots = np.bitwise_or.reduce(padded.reshape(rows, lanes, self._slots) << shifts, axis=1)
                if masks:  # secure aggregation: uniform mod t, so one upload decrypts to noise
                    mask = combined(masks, slots.size, t, self._slots, offset // per_ct + first)
                    slots = add_mod(slots.ravel(), mask, t).reshape(rows, self._slots)
                yield slots

        encrypted = self._map(encrypt_rows, self.encrypt_rows, blocks())
        chunks = [chunk for block in encrypted for chunk in block]
        return Payload(
            self.name, tuple(chunks), int(x.size), bound=float(bound), layout=(bits, lanes, lane_bits),
            terms=(tag,), key_id=self.key_id,
        )  # fmt: skip

    def chunk_values(self, exact: bool = False) -> int:
        _, lanes, _ = self._layout(exact)
        return lanes * self._slots

    def _map(self, in_worker: Callable[[A], R], here: Callable[[A], R], items: Iterable[A]) -> Iterator[R]:
        """Blocks through the worker processes when there are any, else in this process."""
        return self._workers.map(in_worker, items) if self._workers is not None else map(here, items)

    def encrypt_rows(self, rows: np.ndarray) -> list[bytes]:
        """Slot rows (each below t) -> compact ciphertexts (what a worker process does)."""
        assert self._encryptor is not None
        plain = seal.Plaintext()
        out = []
        for row in rows:
            self._encoder.encode(row.tolist(), plain)
            out.append(self._compact(self._files.dump(self._encryptor.encrypt_symmetric(plain))))
        return out

    def decrypt_chunks(self, chunks: Sequence[bytes]) -> np.ndarray:
        """Compact (summed) ciphertexts -> their slot rows mod t (what a worker process does)."""
        assert self._decryptor is not None
        plain = seal.Plaintext()
        rows = []
        for chunk in chunks:
            self._decryptor.decrypt(self._ciphertext(self._read(chunk)), plain)
            rows.append(np.array(self._encoder.decode_uint64(plain), dtype=np.uint64))
        return np.stack(rows)

    def _compact(self, blob: bytes) -> bytes:
        """SEAL's seeded ciphertext (zstd) -> the compact wire form: c0 bit-packed, and the seed."""
        template, words, seed = SealTemplate.parse(blob, self.words)
        self._template = self._template or template
        return Compact((seed,), words).to_bytes(self.words)

    def _load(self, payload: Payload) -> list[Compact]:
        check_payload(self.name, payload, key_id=self.key_id)
        return [self._read(chunk) for chunk in payload.chunks]

    def _read(self, chunk: bytes) -> Compact:
        try:
            return Compact.from_bytes(chunk, self.words)
        except CodecError as err:
            raise CodecError(f"unreadable BFV ciphertext: {err}") from err

    def _ciphertext(self, item: Compact) -> seal.Ciphertext:
        """The SEAL ciphertext of a (summed) compact one: c0 as sent, each c1 regenerated from its
        seed by SEAL's loader and added (a silo's work: it needs a template from its own encryption)."""
        if self._template is None and self._encryptor is not None:
            self._compact(self._files.dump(self._encryptor.encrypt_symmetric(seal.Plaintext("0"))))
        assert self._template is not None
        try:
            ct = self._files.load(
                seal.Ciphertext(), self._context, self._template.blob(item.words, item.seeds[0])
            )
            zeros = np.zeros_like(item.words)
            for seed in item.seeds[1:]:
                other = self._files.load(seal.Ciphertext(), self._context, self._template.blob(zeros, seed))
                self._evaluator.add_inplace(ct, other)
        except Exception as err:  # SEAL raises bare RuntimeError/ValueError on bad bytes
            raise CodecError(f"unreadable BFV ciphertext: {err}") from err
        return ct

    def accumulator(self) -> Accumulator:
        """c0 words summed with numpy as they arrive (no SEAL object, no key); seeds collected.
        Scaling is recorded, not computed (BFV holds integers): silos apply it after decryption."""

        def add_into(total: _Running, part: _Running) -> None:
            total.words += part.words
            total.seeds.extend(part.seeds)

        def dump(parts: list[_Running], factor: float) -> tuple[tuple[bytes, ...], float]:
            return tuple(Compact(tuple(p.seeds), p.words).to_bytes(self.words) for p in parts), factor

        def load(payload: Payload) -> list[_Running]:
            return [_Running(list(c.seeds), c.words) for c in self._load(payload)]  # fresh arrays

        return RunningSum(self.name, self.key_id, load, add_into, dump, limit=self.params.max_silos)

    def add(self, a: Payload, b: Payload) -> Payload:
        return add_pair(self, a, b)

    def scale(self, a: Payload, factor: float) -> Payload:
        return scale_one(self, a, factor)

    def decode(self, payload: Payload, *, offset: int = 0) -> np.ndarray:
        if self._decryptor is None:
            raise CodecError("this context holds no secret key and cannot decrypt")
        if payload.layout is None or payload.bound is None:
            raise CodecError("packed payload without its quantization layout")
        check_payload(self.name, payload, key_id=self.key_id)
        bits, lanes, lane_bits = payload.layout
        per_ct, t = lanes * self._slots, self.plain_modulus
        if len(payload.chunks) * per_ct < payload.length:
            raise CodecError(f"{len(payload.chunks)} ciphertexts cannot hold {payload.length} values")
        if offset % per_ct:
            raise CodecError(f"a piece must start on a ciphertext ({per_ct} values), not at {offset}")
        shifts = (np.arange(lanes, dtype=np.uint64) * np.uint64(lane_bits))[None, :, None]
        lane = np.uint64((1 << lane_bits) - 1)
        bias = len(payload.terms) * 2 ** (bits - 1)
        step = payload.bound / (2 ** (bits - 1) - 1) * payload.scale
        out = np.empty(payload.length)
        firsts = range(0, len(payload.chunks), BLOCK)  # a block at a time: temporaries stay small
        groups = (payload.chunks[first : first + BLOCK] for first in firsts)
        decrypted = self._map(decrypt_chunks, self.decrypt_chunks, groups)
        for first, slots in zip(firsts, decrypted, strict=True):
            if payload.unmask:  # secure aggregation: the masks left in the sum, rebuilt from shares
                mask = combined(payload.unmask, slots.size, t, self._slots, offset // per_ct + first)
                slots = sub_mod(slots.ravel(), mask, t).reshape(slots.shape)
            a = first * per_ct
            b = min(payload.length, a + slots.shape[0] * per_ct)
            if b <= a:
                break
            total = ((slots[:, None, :] >> shifts) & lane).reshape(-1)[: b - a].astype(np.int64) - bias
            dithers = np.zeros(b - a)
            for tag in sorted(payload.terms):  # the same floats in any arrival order
                dithers += dither(self._dither_key, tag, b - a, start=offset + a)
            out[a:b] = (total.astype(np.float64) - dithers) * step
        return out

    def describe(self) -> dict[str, str]:
        p = self.params
        return {
            "scheme": "packed",
            "poly_modulus_degree": str(p.poly_modulus_degree),
            "coeff_mod_bit_sizes": ",".join(
                str(m.bit_count()) for m in self._context.key_context_data().parms().coeff_modulus()
            ),
            "plain_modulus_bits": str(p.plain_modulus_bits),
            "value_bits": str(p.value_bits),
            "lanes": str(p.lanes),
            "max_silos": str(p.max_silos),
            "rounding": "subtractive dither",
            "encryption": "symmetric, seeded",
            "wire": "c0 bit-packed to its moduli, c1 as seeds",
            "key_id": self.key_id,
        }


class _Running:
    """The orchestrator's running sum of one ciphertext: unreduced c0 words and the seeds."""

    def __init__(self, seeds: list[bytes], words: np.ndarray) -> None:
        self.seeds, self.words = seeds, words


class PackedKeys:
    """A BFV secret key. Lives only inside silo processes; never pickled."""

    def __init__(self, params: PackedParams, secret: seal.SecretKey, secret_bytes: bytes) -> None:
        self.params = params
        self._parms = _encryption_parameters(params)
        self._secret = secret
        self._secret_bytes = secret_bytes
        self.key_id = hashlib.blake2b(secret_bytes, person=b"fedsilo-key-id", digest_size=8).hexdigest()
        self._dither_key = hashlib.blake2b(secret_bytes, person=b"fedsilo-dither", digest_size=32).digest()

    @classmethod
    def generate(cls, params: PackedParams | None = None) -> PackedKeys:
        params = params or PackedParams()
        context = _context(_encryption_parameters(params))
        secret = seal.KeyGenerator(context).secret_key()
        return cls(params, secret, _SealFiles().dump(secret))

    @classmethod
    def from_secret_bytes(cls, data: bytes, params: PackedParams) -> PackedKeys:
        context = _context(_encryption_parameters(params))
        try:
            secret = _SealFiles().load(seal.SecretKey(), context, data)
        except Exception as err:
            raise CodecError(f"not a BFV secret key for these parameters: {err}") from err
        return cls(params, secret, data)

    def secret_bytes(self) -> bytes:
        return self._secret_bytes

    def public_bytes(self) -> bytes:
        """The encryption parameters: enough to add ciphertexts, nothing to decrypt or encrypt."""
        return _SealFiles().dump(self._parms)

    def codec(self, workers: int = 1) -> PackedCodec:
        """A codec that encrypts and decrypts; ``workers`` >= 2: in that many processes."""
        pool = Workers(workers, self._secret_bytes, self.params) if workers >= 2 else None
        return PackedCodec(self.params, self._parms, self.key_id, self._secret, self._dither_key, pool)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("PackedKeys hold a secret key and must never be pickled")


def public_packed_codec(public_bytes: bytes, params: PackedParams, key_id: str) -> PackedCodec:
    """The orchestrator's codec: parameters only (it carries no key to refuse)."""
    parms = _SealFiles().load(seal.EncryptionParameters(seal.SCHEME_TYPE.BFV), None, public_bytes)
    return PackedCodec(params, parms, key_id)

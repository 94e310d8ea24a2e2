"""Packed encryption and decryption on several cores of a silo's node.

SEAL's Python bindings hold the GIL while they encrypt (two threads encrypt no faster
than one: measured in docs/benchmarks.md), so a silo with ``cpus_per_silo`` of 2 or more
encrypts and decrypts blocks of ciphertexts in that many worker processes. Each worker
is spawned by the silo process on the silo's own node and gets the secret key once, over
the pipe to its parent; it never leaves the node. Quantization, masks and the dither stay
in the silo process: the workers only turn slot rows into compact ciphertexts and back.

    python -c "from privacy.packed import PackedKeys; c = PackedKeys.generate().codec(workers=2); \
print(c.decode(c.encode([0.5, -1.0], bound=2, tag='a'))[:2])"
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from privacy.params import PackedParams

if TYPE_CHECKING:
    from privacy.packed import PackedCodec

A = TypeVar("A")
R = TypeVar("R")

# A worker process's codec, made once by `_start` (a pool initializer can only leave state at
# module level in the process it runs in; the silo process itself never sets it).
_WORKER: dict[str, PackedCodec] = {}


def _start(secret: bytes, params: PackedParams) -> None:
    from privacy.packed import PackedKeys

    _WORKER["codec"] = PackedKeys.from_secret_bytes(secret, params).codec()


def encrypt_rows(rows: np.ndarray) -> list[bytes]:
    return _WORKER["codec"].encrypt_rows(rows)


def decrypt_chunks(chunks: tuple[bytes, ...]) -> np.ndarray:
    return _WORKER["codec"].decrypt_chunks(chunks)


class Workers:
    """A silo's pool of encryption processes, started on first use, blocks kept in order."""

    def __init__(self, count: int, secret: bytes, params: PackedParams) -> None:
        self.count = count
        self._secret, self._params = secret, params
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:  # spawn: forking a process that runs Ray's threads is unsafe
            self._pool = ProcessPoolExecutor(
                self.count, multiprocessing.get_context("spawn"), _start, (self._secret, self._params)
            )
        return self._pool

    def map(self, function: Callable[[A], R], items: Iterable[A]) -> Iterator[R]:
        """``function`` over ``items`` in the workers, results in order; at most two blocks per
        worker in flight, so a large model's blocks are not all held at once."""
        pool = self._executor()
        pending: deque[Future[R]] = deque()
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= 2 * self.count:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError("Workers hold a secret key and must never be pickled")

"""HE codecs side by side: encrypt/decrypt/aggregate time, bytes and error per parameter.

One run, the same update vectors (4 silos x 1,000,000 float64 values, ``N(0, 0.05)``, fixed
seed) through four codecs:

- ``plaintext-float32``: float32 bytes; the orchestrator sums the 4 arrays and scales by 1/4;
- ``nvflare-default``: NVIDIA FLARE's default HE set-up done directly with TenSEAL: CKKS,
  poly_modulus_degree 8192, coeff_mod_bit_sizes [60, 40, 40], scale 2^40, Galois keys
  generated, one value per slot (``ts.ckks_vector`` chunks of 4096 values); the server
  deserializes, adds the 4 ciphertexts, multiplies by 1/4 and serializes the result;
- ``fedsilo-ckks``: fedsilo's CKKS codec (``privacy/he.py``);
- ``fedsilo-default``: fedsilo's packed BFV codec (``privacy/packed.py``), ``max_silos = 4``.

fedsilo's codecs go through fedsilo's own aggregation, as the orchestrator runs it: each
silo ``encode_weighted(codec, x_k, 1.0, bound=B, tag=...)`` with the shared bound
``B = max_k bound_hint(x_k)``, the orchestrator ``WeightedSum(public codec)``, ``add`` x 4,
``mean()``, and a silo decodes with its secret codec.

Times are wall-clock seconds in this one process (single-threaded: TenSEAL contexts with
``n_threads=1`` where the API takes it, ``OMP_NUM_THREADS=1``; SEAL itself is serial);
encrypt/decrypt are per silo and per million parameters, aggregate is the orchestrator's
whole step (including (de)serialization). Errors are against the float64 mean. From the
repository root:

    .venv/bin/python benchmarks/he_codec.py --json he_codec.json
    .venv/bin/python benchmarks/he_codec.py --params 100000 --repeat 3   # quicker
    .venv/bin/python benchmarks/he_codec.py --params 10000000 --workers 2  # and encryption processes
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"  # before numpy/TenSEAL load their thread pools

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import tenseal as ts
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from privacy.aggregate import WeightedPayload, WeightedSum, bound_hint, encode_weighted  # noqa: E402
from privacy.codec import Codec, Payload  # noqa: E402
from privacy.he import CKKSKeys, public_codec  # noqa: E402
from privacy.packed import PackedKeys, public_packed_codec  # noqa: E402
from privacy.params import PackedParams  # noqa: E402

CODECS = ("plaintext-float32", "nvflare-default", "fedsilo-ckks", "fedsilo-default")
NVFLARE_SLOTS = 4096  # poly_modulus_degree 8192 / 2: one value per CKKS slot
TARGET_SPEEDUP = 3.5  # nvflare-default encrypt time / fedsilo-default encrypt time, at least
TARGET_UP = 5.0  # fedsilo-default upload bytes per parameter, at most
TARGET_DOWN = 10.0  # fedsilo-default download bytes per parameter, at most
TARGET_STEPS = 0.5  # fedsilo-default max error in quantization steps, at most
WARMUP_PARAMS = 20_000

T = TypeVar("T")


@dataclass
class Row:
    codec: str
    encrypt_s_per_mparam: float
    decrypt_s_per_mparam: float
    aggregate_s: float
    up_bytes_per_param: float
    down_bytes_per_param: float
    max_abs_error: float
    quantization_step: float | None = None
    error_in_steps: float | None = None


class Bench(Protocol):
    """One codec's round trip: silo k encodes, the orchestrator aggregates, a silo decodes."""

    name: str

    def encode(self, silo: int, x: np.ndarray) -> Any: ...

    def up_bytes(self, item: Any) -> int: ...

    def aggregate(self, items: list[Any]) -> Any: ...

    def down_bytes(self, aggregate: Any) -> int: ...

    def decode(self, aggregate: Any) -> np.ndarray: ...


class PlainFloat32:
    name = "plaintext-float32"

    def encode(self, silo: int, x: np.ndarray) -> bytes:
        return np.asarray(x, np.float32).tobytes()

    def up_bytes(self, item: bytes) -> int:
        return len(item)

    def aggregate(self, items: list[bytes]) -> bytes:
        total = np.frombuffer(items[0], np.float32).copy()
        for item in items[1:]:
            total += np.frombuffer(item, np.float32)
        total *= np.float32(1.0 / len(items))
        return total.tobytes()

    def down_bytes(self, aggregate: bytes) -> int:
        return len(aggregate)

    def decode(self, aggregate: bytes) -> np.ndarray:
        return np.frombuffer(aggregate, np.float32)


class NVFlareDefault:
    """NVFlare's default HE configuration (its HEBuilder defaults), straight on TenSEAL."""

    name = "nvflare-default"

    def __init__(self) -> None:
        context = ts.context(
            ts.SCHEME_TYPE.CKKS, poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 40, 40], n_threads=1
        )
        context.global_scale = 2**40
        context.generate_galois_keys()
        self._client = context  # every client holds the same secret context
        server = ts.context_from(context.serialize(save_secret_key=False), n_threads=1)  # the server's
        server.global_scale = 2**40
        self._server = server

    def encode(self, silo: int, x: np.ndarray) -> list[bytes]:
        return [
            ts.ckks_vector(self._client, x[i : i + NVFLARE_SLOTS].tolist()).serialize()
            for i in range(0, x.size, NVFLARE_SLOTS)
        ]

    def up_bytes(self, item: list[bytes]) -> int:
        return sum(len(c) for c in item)

    def aggregate(self, items: list[list[bytes]]) -> list[bytes]:
        factor = 1.0 / len(items)
        out = []
        for chunks in zip(*items, strict=True):
            total = ts.ckks_vector_from(self._server, chunks[0])
            for chunk in chunks[1:]:
                total += ts.ckks_vector_from(self._server, chunk)
            total *= factor
            out.append(total.serialize())
        return out

    def down_bytes(self, aggregate: list[bytes]) -> int:
        return sum(len(c) for c in aggregate)

    def decode(self, aggregate: list[bytes]) -> np.ndarray:
        parts = [np.asarray(ts.ckks_vector_from(self._client, c).decrypt()) for c in aggregate]
        return np.concatenate(parts)


class Fedsilo:
    """A fedsilo codec through privacy.aggregate, exactly as silos and the orchestrator call it."""

    def __init__(self, name: str, silo_codecs: list[Codec], orchestrator: Codec) -> None:
        self.name = name
        self._silos = silo_codecs
        self._orchestrator = orchestrator
        self.bound: float | None = None  # agreed before encoding (see bound_hint)

    def encode(self, silo: int, x: np.ndarray) -> WeightedPayload:
        return encode_weighted(self._silos[silo], x, 1.0, bound=self.bound, tag=f"bench/{silo}")

    def up_bytes(self, item: WeightedPayload) -> int:
        return item.payload.nbytes

    def aggregate(self, items: list[WeightedPayload]) -> Payload:
        running = WeightedSum(self._orchestrator)
        for item in items:
            running.add(item)
        return running.mean()

    def down_bytes(self, aggregate: Payload) -> int:
        return aggregate.nbytes

    def decode(self, aggregate: Payload) -> np.ndarray:
        return self._silos[0].decode(aggregate)


def fedsilo_ckks(silos: int) -> Fedsilo:
    keys = CKKSKeys.generate()
    orchestrator = public_codec(keys.public_bytes(), keys.params, keys.key_id)
    return Fedsilo("fedsilo-ckks", [keys.codec() for _ in range(silos)], orchestrator)


def fedsilo_default(silos: int, workers: int = 1) -> tuple[Fedsilo, PackedParams]:
    keys = PackedKeys.generate(PackedParams(max_silos=silos))
    orchestrator = public_packed_codec(keys.public_bytes(), keys.params, keys.key_id)
    name = "fedsilo-default" if workers == 1 else f"fedsilo-default, {workers} worker processes"
    if workers == 1:
        return Fedsilo(name, [keys.codec() for _ in range(silos)], orchestrator), keys.params
    shared = keys.codec(workers=workers)  # the silos take turns here: one pool serves them all
    return Fedsilo(name, [shared] * silos, orchestrator), keys.params


@dataclass
class Timing:
    wall_s: float  # median over repeats
    cpu_s: float  # process CPU time of the same runs (median): ~wall_s when single-threaded


def timed(fn: Callable[[], T], repeat: int) -> tuple[T, Timing]:
    walls, cpus = [], []
    result: T | None = None
    for _ in range(repeat):
        result = None  # let the previous result go before the next run
        gc.collect()
        c0, t0 = time.process_time(), time.perf_counter()
        result = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    assert result is not None
    return result, Timing(statistics.median(walls), statistics.median(cpus))


def run(bench: Bench, xs: list[np.ndarray], exact: np.ndarray, repeat: int) -> tuple[Row, list[Timing]]:
    mparams = xs[0].size / 1e6
    # Warm-up on a small vector: first-call costs (allocations, tables) stay out of the numbers.
    small = [x[:WARMUP_PARAMS] for x in xs]
    bench.decode(bench.aggregate([bench.encode(k, x) for k, x in enumerate(small)]))

    items, encrypt = [], []
    for k, x in enumerate(xs):
        item, timing = timed(lambda k=k, x=x: bench.encode(k, x), repeat)
        items.append(item)
        encrypt.append(timing)
    aggregate, aggregate_t = timed(lambda: bench.aggregate(items), repeat)
    decoded, decrypt_t = timed(lambda: bench.decode(aggregate), repeat)

    decoded = np.asarray(decoded, dtype=np.float64)
    if decoded.shape != exact.shape:
        raise RuntimeError(f"{bench.name}: decoded {decoded.shape}, expected {exact.shape}")
    row = Row(
        codec=bench.name,
        encrypt_s_per_mparam=statistics.fmean(t.wall_s for t in encrypt) / mparams,
        decrypt_s_per_mparam=decrypt_t.wall_s / mparams,
        aggregate_s=aggregate_t.wall_s,
        up_bytes_per_param=statistics.fmean(bench.up_bytes(i) for i in items) / exact.size,
        down_bytes_per_param=bench.down_bytes(aggregate) / exact.size,
        max_abs_error=float(np.max(np.abs(decoded - exact))),
    )
    return row, [*encrypt, aggregate_t, decrypt_t]


def table(rows: list[Row], title: str) -> Table:
    out = Table(title=title)
    out.add_column("codec")
    for header in (
        "encrypt\ns / Mparam",
        "decrypt\ns / Mparam",
        "aggregate\ns",
        "up\nB / param",
        "down\nB / param",
        "max abs\nerror",
        "quantization\nstep",
        "error\n(steps)",
    ):
        out.add_column(header, justify="right")
    for r in rows:
        out.add_row(
            r.codec,
            f"{r.encrypt_s_per_mparam:.3f}",
            f"{r.decrypt_s_per_mparam:.3f}",
            f"{r.aggregate_s:.3f}",
            f"{r.up_bytes_per_param:.2f}",
            f"{r.down_bytes_per_param:.2f}",
            f"{r.max_abs_error:.2e}",
            "" if r.quantization_step is None else f"{r.quantization_step:.2e}",
            "" if r.error_in_steps is None else f"{r.error_in_steps:.3f}",
        )
    return out


def verdict(ok: bool) -> str:
    return "[green]ok[/green]" if ok else "[red]MISSED[/red]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=1_000_000, help="parameters per update")
    parser.add_argument("--silos", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1, help="time each step this many times (median)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--workers", type=int, default=1,
                        help="also time the packed codec with this many encryption processes")  # fmt: skip
    args = parser.parse_args(argv)
    if args.params < 1 or args.silos < 2 or args.repeat < 1:
        parser.error("need --params >= 1, --silos >= 2, --repeat >= 1")

    console = Console(width=max(Console().width, 120))  # the table whole, also when piped
    rng = np.random.default_rng(args.seed)
    xs = [rng.normal(0.0, 0.05, args.params) for _ in range(args.silos)]
    exact = np.sum(xs, axis=0) / args.silos
    bound = max(bound_hint(x) for x in xs)
    load = os.getloadavg()
    console.print(
        f"{args.params:,} parameters x {args.silos} silos, N(0, 0.05) seed {args.seed}, "
        f"shared bound {bound:g}; repeat {args.repeat}; TenSEAL {ts.__version__}, numpy {np.__version__}, "
        f"{os.cpu_count()} CPUs, load {load[0]:.2f}"
    )

    rows: list[Row] = []
    busy = 0.0  # largest CPU/wall ratio of any timed step: > 1 means more than one core was used
    packed_params: PackedParams | None = None
    extra = [f"fedsilo-default, {args.workers} worker processes"] if args.workers >= 2 else []
    for name in [*CODECS, *extra]:
        with console.status(f"{name}: keys"):
            bench: Bench
            if name == "plaintext-float32":
                bench = PlainFloat32()
            elif name == "nvflare-default":
                bench = NVFlareDefault()
            elif name == "fedsilo-ckks":
                bench = fedsilo_ckks(args.silos)
                bench.bound = bound
            else:
                bench, packed_params = fedsilo_default(args.silos, 1 if name in CODECS else args.workers)
                bench.bound = bound
        with console.status(f"{name}: {args.silos} silos encrypt, aggregate, decrypt"):
            row, timings = run(bench, xs, exact, args.repeat)
        if name.startswith("fedsilo-default") and packed_params is not None:
            row.quantization_step = bound / (2 ** (packed_params.value_bits - 1) - 1)
            row.error_in_steps = row.max_abs_error / row.quantization_step
        busy = max([busy, *(t.cpu_s / t.wall_s for t in timings if t.wall_s > 0.05)])
        rows.append(row)
        del bench
        gc.collect()

    load = os.getloadavg()
    console.print(table(rows, f"HE codecs, {args.params:,} parameters, {args.silos} silos"))
    by = {r.codec: r for r in rows}
    nv, fd = by["nvflare-default"], by["fedsilo-default"]
    speedup = nv.encrypt_s_per_mparam / fd.encrypt_s_per_mparam
    console.print(
        f"encrypt, nvflare-default / fedsilo-default: {speedup:.2f}x "
        f"(target >= {TARGET_SPEEDUP}x) {verdict(speedup >= TARGET_SPEEDUP)}"
    )
    console.print(
        f"fedsilo-default bytes per parameter: up {fd.up_bytes_per_param:.2f} (target <= {TARGET_UP:g}) "
        f"{verdict(fd.up_bytes_per_param <= TARGET_UP)}, down {fd.down_bytes_per_param:.2f} "
        f"(target <= {TARGET_DOWN:g}) {verdict(fd.down_bytes_per_param <= TARGET_DOWN)}"
    )
    if fd.error_in_steps is not None:
        console.print(
            f"fedsilo-default max error: {fd.error_in_steps:.3f} quantization steps "
            f"(target <= {TARGET_STEPS}) {verdict(fd.error_in_steps <= TARGET_STEPS)}"
        )
    console.print(f"largest CPU/wall ratio of a timed step: {busy:.2f}; load at the end {load[0]:.2f}")

    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
        console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

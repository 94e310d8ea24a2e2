"""How rounds scale with silos and model size: 4 to 32 silos, 10^4 to 10^8 parameters, HE on and off.

The silos are simulated on this machine: `SyntheticSilo` is the real silo actor without data
or training (its "local update" is the global model plus noise), so the key exchange, the
range agreement, quantization, encryption, signatures, the orchestrator's streaming sum and
decryption are all the real ones. Per configuration: two rounds (the first warms up), the
second reported, with where its time went, and the orchestrator's peak memory.

    .venv/bin/python benchmarks/scale.py --json scale.json
    .venv/bin/python benchmarks/scale.py --silos 4 8 --params 10000 100000 --he packed   # quicker
    .venv/bin/python benchmarks/scale.py --silos 4 8 --params 1000000 --secagg off pairwise  # its cost
    .venv/bin/python benchmarks/scale.py --silos 4 --params 100000000 --he packed off  # 10^8, minutes
    .venv/bin/python benchmarks/scale.py --silos 4 --params 10000000 --he packed --pieces 0 1572864

Encrypted updates above `--pieces` values stream in pieces of that many (0: whole updates).
JSON rows carry he, secagg, piece_values, silos, params, round_s, aggregate_s, orchestrator_cpu_s
and machine_cpu_s (CPU seconds of the orchestrator process and of the whole machine in round 2),
up_bytes_per_param, down_bytes_per_param (per silo), orchestrator_peak_mb, silo_peak_mb (a silo process's peak
resident memory in that configuration) and silo_base_mb (the same before round 1: code,
libraries and the float32 model, whose size is 4 bytes a parameter).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from rich.console import Console
from rich.table import Table

from orchestrator.actor import Orchestrator
from orchestrator.settings import OrchestratorSettings
from orchestrator.strategies import FedAvg
from privacy.codec import Payload
from privacy.params import HEConfig, PackedParams
from privacy.signing import SignedUpdate
from silo.actor import SiloWorker, silo_actor
from silo.config import DataSpec, ModelSpec, SiloSpec
from silo.data import SiloDescription
from silo.exchange import Exchange
from silo.messages import Evaluation, FitIns, FitRes, SiloReady
from silo.preprocess import AgreedSchema
from silo.update import staged_update

ROWS = 200  # training rows per simulated silo: the aggregation weight
SLOTS = Path(tempfile.gettempdir()) / "fedsilo-scale-slots"


@contextlib.contextmanager
def cpu_slot() -> Iterator[None]:
    """One of `os.cpu_count()` slots, across the silo processes of this machine. Simulated silos
    share the machine's cores: without this, all of them would decrypt or encrypt at once,
    each with its large temporaries, which takes no less time and can exhaust memory; on a
    real cluster each silo does this work on its own node."""
    SLOTS.mkdir(exist_ok=True)
    while True:
        for slot in range(os.cpu_count() or 2):
            handle = open(SLOTS / str(slot), "w")  # noqa: SIM115 (held while the slot is)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            return
        time.sleep(0.005)


def memory_mb(field: str) -> float:
    """A line of /proc/self/status in MB (VmHWM: peak resident; RssAnon: private now); 0 elsewhere."""
    with contextlib.suppress(OSError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return 0.0


class SyntheticSilo(SiloWorker):
    """The silo protocol with a synthetic model of ``n_parameters`` and no data: a float32
    parameter vector exchanged through the real `Exchange`, the global model loaded and the
    update staged by the real code (`_load_global`, `staged_update`, `_stage`); only training is
    replaced, by one in-place step of noise (a gradient-sized temporary, as an optimizer's)."""

    def configure(self, n_parameters: int) -> None:
        self._n = n_parameters
        self._pre = None
        self._times: dict[str, float] = {}
        self._exchange = self._model = None  # the last configuration's model goes first
        model = torch.nn.Module()
        model.register_parameter("w", torch.nn.Parameter(torch.zeros(n_parameters)))
        self._model, self._exchange = model, Exchange(model)
        self._initial = self._exchange.snapshot()
        with contextlib.suppress(OSError):  # this configuration's peak, not an earlier one's
            Path("/proc/self/clear_refs").write_text("5")
        self._times["base_mb"] = memory_mb("VmHWM")

    def describe(self) -> SiloDescription:
        return SiloDescription(self.name, ROWS, ("x", "y"), ("x",), ("x",), {}, ("0", "1"), {})

    def stats_sums(self, schema: AgreedSchema) -> float:
        self._schema = schema
        return self._stage(np.array([ROWS, 10.0 * ROWS]), 1.0, exact=True)

    def stats_squares(self, sums: Payload) -> float:
        self._require_codec().decode(sums)
        return self._stage(np.array([5.0 * ROWS]), 1.0, exact=True)

    def finish_preprocessing(self, squares: Payload) -> SiloReady:
        self._require_codec().decode(squares)
        self._pre = object()  # ready
        return SiloReady(self.name, ROWS, 10, 0, 1, self._n, "cpu")

    def fit(self, ins: FitIns) -> FitRes:
        self._times["encrypt"] = 0.0
        self._staged = None  # as SiloWorker.fit: last round's update (kept for a resend) goes
        exchange = self._ready()
        with cpu_slot():
            start = time.perf_counter()
            self._load_global(ins.global_payload)  # decoded piece by piece into the model
            self._times["decrypt"] = time.perf_counter() - start
            begin = exchange.snapshot()
            noise = torch.Generator().manual_seed(abs(hash((self.name, ins.round))) % 2**32)
            with torch.no_grad():  # stands for training: one step, in place
                for p in exchange.trainable():
                    p.add_(torch.randn(p.shape, generator=noise), alpha=0.01)
            staged = staged_update(begin, exchange.snapshot(), ins.config, 1, None)
            del begin
            hint = self._stage(staged.vector, float(ROWS), exact=False)
        return FitRes(self.name, ins.round, hint, ROWS, 0.0, Evaluation(self.name, 10, 1.0, 5), 0.0)

    def _encode_piece(self, *args: Any, **kwargs: Any) -> SignedUpdate:
        """Every encoding, whole or a piece of a streamed update (a slot per piece: a silo that
        waits for the orchestrator to read its pieces holds none)."""
        with cpu_slot():
            start = time.perf_counter()
            update = super()._encode_piece(*args, **kwargs)
            self._times["encrypt"] = self._times.get("encrypt", 0.0) + time.perf_counter() - start
        return update

    def times(self) -> dict[str, float]:
        """Where this silo's time went, and its process's peak resident memory since `configure` (MB)."""
        return {**self._times, "peak_mb": memory_mb("VmHWM")}


class MeasuredOrchestrator(Orchestrator):
    def cpu_seconds(self) -> float:
        """CPU time of this process, all threads (Ray's own included)."""
        return time.process_time()


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot (/proc/stat: all but idle and iowait)."""
    with contextlib.suppress(OSError), open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
        return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    return 0.0


def run_config(
    silos: list[Any], he: HEConfig, n_parameters: int, secagg: bool = False, piece_values: int = 0
) -> dict[str, Any]:
    ray.get([s.configure.remote(n_parameters) for s in silos])
    handles = {f"s{i}": s for i, s in enumerate(silos)}
    settings = OrchestratorSettings(
        min_silos=len(silos), round_timeout_s=1200, he=he, secagg=secagg, piece_values=piece_values
    )
    orchestrator = ray.remote(num_cpus=0.1)(MeasuredOrchestrator).remote(handles, FedAvg(), settings)
    try:
        ray.get(orchestrator.setup.remote())
        baseline = ray.get(orchestrator.peak_memory_bytes.remote())["rss"]
        ray.get(orchestrator.run_round.remote(1))  # warm-up, and a global model to decrypt
        cpu = ray.get(orchestrator.cpu_seconds.remote()), machine_cpu_seconds()
        start = time.perf_counter()
        record = ray.get(orchestrator.run_round.remote(2))
        wall = time.perf_counter() - start
        machine_cpu = machine_cpu_seconds() - cpu[1]
        orchestrator_cpu = ray.get(orchestrator.cpu_seconds.remote()) - cpu[0]
        times = ray.get([s.times.remote() for s in silos])
        count = len(silos)
        return {
            "silos": count,
            "parameters": n_parameters,
            "params": n_parameters,
            "up_bytes_per_param": record.bytes_up / count / n_parameters,
            "down_bytes_per_param": record.bytes_down / count / n_parameters,
            "silo_peak_mb": max(t["peak_mb"] for t in times),  # a silo process's peak RSS, this configuration
            "silo_base_mb": max(t["base_mb"] for t in times),  # ... before round 1 (code, libraries, model)
            "he": he.scheme,
            "secagg": "pairwise" if secagg else "off",
            "piece_values": piece_values,  # 0: whole updates
            "round_s": wall,
            "aggregate_s": record.aggregate_seconds,
            "encrypt_s_per_silo": float(np.mean([t.get("encrypt", 0.0) for t in times])),
            "decrypt_s_per_silo": float(np.mean([t.get("decrypt", 0.0) for t in times])),
            "bytes_up": record.bytes_up,
            "bytes_down": record.bytes_down,
            "orchestrator_peak_mb": (memory := ray.get(orchestrator.peak_memory_bytes.remote()))["rss"]
            / 2**20,
            "orchestrator_private_peak_mb": memory["private"] / 2**20,
            "orchestrator_after_setup_mb": baseline / 2**20,
            "orchestrator_cpu_s": orchestrator_cpu,  # the orchestrator process's CPU in round 2
            "machine_cpu_s": machine_cpu,  # every process of this machine during round 2
        }
    finally:
        ray.kill(orchestrator)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--silos", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--params", type=int, nargs="+", default=[10**4, 10**5, 10**6, 10**7])
    parser.add_argument("--he", nargs="+", choices=["packed", "ckks", "off"], default=["packed", "off"])
    parser.add_argument("--secagg", nargs="+", choices=["off", "pairwise"], default=["off"],
                        help="secure aggregation (pairwise masks) off, on, or both side by side")  # fmt: skip
    parser.add_argument("--pieces", type=int, nargs="+", default=[OrchestratorSettings(1, 1).piece_values],
                        help="values per streamed piece (0: whole); several: side by side")  # fmt: skip
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    console = Console(width=150)
    ray.init(address="local", num_cpus=os.cpu_count() or 2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")  # fmt: skip
    rows: list[dict[str, Any]] = []
    try:
        for scheme in args.he:
            for count in args.silos:
                he = HEConfig(scheme=scheme, packed=PackedParams(max_silos=count))
                spec = SiloSpec("", "", DataSpec(target="y"), ModelSpec(), he=he)
                actor = silo_actor(SyntheticSilo, num_cpus=0.01)
                silos = [
                    actor.remote(SiloSpec(f"s{i}", "", spec.data, spec.model, he=he)) for i in range(count)
                ]
                try:
                    for n, secagg, piece in [
                        (n, m, p) for n in args.params for m in args.secagg for p in args.pieces
                    ]:
                        if secagg == "pairwise" and count < 2:
                            continue
                        with console.status(f"he={scheme}, {count} silos, {n:,} parameters, secagg {secagg}"):
                            row = run_config(silos, he, n, secagg == "pairwise", piece)
                        rows.append(row)
                        if args.json:
                            args.json.write_text(json.dumps(rows, indent=2))  # kept if a later row fails
                        console.print(
                            f"he={scheme:6} secagg={secagg:8} pieces={piece:>8} silos={count:3} "
                            f"params={n:>10,}: "
                            f"round {row['round_s']:.2f}s, "
                            f"aggregate {row['aggregate_s']:.2f}s, "
                            f"orchestrator CPU {row['orchestrator_cpu_s']:.2f}s, "
                            f"machine CPU {row['machine_cpu_s']:.1f}s, "
                            f"orchestrator peak {row['orchestrator_peak_mb']:.0f} MB "
                            f"(private {row['orchestrator_private_peak_mb']:.0f} MB)"
                        )
                finally:
                    for s in silos:
                        ray.kill(s)
    finally:
        ray.shutdown()
    table = Table(title="Round cost by silos and parameters (second round of each configuration)")
    columns = ("he", "secagg", "piece values", "silos", "parameters", "round s", "aggregate s",
               "encrypt s/silo", "decrypt s/silo", "up B/param", "down B/param", "silo peak MB", "MB up",
               "MB down", "silo MB before round 1",
               "orch. MB after set-up", "orch. peak RSS MB", "orch. peak private MB")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            r["he"], r.get("secagg", "off"), str(r.get("piece_values", 0)), str(r["silos"]),
            f"{r['parameters']:,}", f"{r['round_s']:.2f}",
            f"{r['aggregate_s']:.3f}", f"{r['encrypt_s_per_silo']:.3f}", f"{r['decrypt_s_per_silo']:.3f}",
            f"{r['up_bytes_per_param']:.2f}", f"{r['down_bytes_per_param']:.2f}", f"{r['silo_peak_mb']:.0f}",
            f"{r['bytes_up'] / 1e6:.1f}", f"{r['bytes_down'] / 1e6:.1f}", f"{r.get('silo_base_mb', 0):.0f}",
            f"{r['orchestrator_after_setup_mb']:.0f}", f"{r['orchestrator_peak_mb']:.0f}",
            f"{r['orchestrator_private_peak_mb']:.0f}",
        )  # fmt: skip
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

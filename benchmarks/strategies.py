"""Strategies on the bundled four-hospital example: FedAvg vs FedProx, FedAdam, FedYogi,
FedAdagrad and SCAFFOLD, final global and mean-of-silos validation accuracy.

Each strategy runs the real protocol (key exchange, federated preprocessing, encrypted
rounds; the server optimizers' step by one silo) on one local Ray, from the same seeded
initial model; the figures are the model after the last round, scored by every silo on
its own validation rows. Published reference on this data (FLamby Fed-Heart-Disease,
mean of centers): FedAvg 0.685, FedYogi 0.731.

    .venv/bin/python benchmarks/strategies.py --json strategies.json
    .venv/bin/python benchmarks/strategies.py --he off --rounds 10 fedavg fedyogi   # quicker
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

import ray
from rich.console import Console
from rich.table import Table

from orchestrator.actor import Orchestrator
from pipelines import build
from pipelines.spec import LoadedPipeline, bundled_example, parse_pipeline
from silo.actor import silo_actor

STRATEGIES = ["fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad", "scaffold"]
# Tuned on this example (see docs/benchmarks.md); other settings are the pipeline's and Flower's.
TUNED: dict[str, str] = {}


def example(he: str, strategy: str, training: str = "", seed: int = 0) -> LoadedPipeline:
    """The bundled pipeline with ``he``, ``strategy`` and extra [training] lines; ``seed`` sets
    both the silos' train/validation split ([data] seed) and local training ([training] seed)."""
    text = bundled_example().read_text()
    text = re.sub(r"(?m)^strategy = .*$", f'strategy = "{strategy}"\n{training}\nseed = {seed}', text)
    text = re.sub(r"(?m)^\[data\]$", f"[data]\nseed = {seed}", text)
    text = re.sub(r"(?m)^he = .*$", f'he = "{he}"', text)
    return parse_pipeline(text, bundled_example())


def federate(loaded: LoadedPipeline, rounds: int, classes: dict[str, type] | None = None) -> dict[str, Any]:
    """Run ``rounds`` rounds with fresh actors; the final model's scores and per-round curve."""
    specs = build.silo_specs(loaded)
    silos = {s.name: silo_actor((classes or {}).get(s.name), num_cpus=0.1).remote(s) for s in specs}
    settings = build.orchestrator_settings(loaded)
    orchestrator = ray.remote(num_cpus=0.1)(Orchestrator).remote(silos, build.strategy(loaded), settings)
    start = time.perf_counter()
    try:
        ray.get(orchestrator.setup.remote())
        curve, bytes_up, rejected = [], 0, 0
        for r in range(1, rounds + 1):
            record = ray.get(orchestrator.run_round.remote(r))
            bytes_up += record.bytes_up
            rejected += len(record.rejected)
            if record.incoming is not None:
                curve.append(mean_of_silos(record.incoming))
        final = ray.get(orchestrator.evaluate.remote())
    finally:
        for handle in [orchestrator, *silos.values()]:
            ray.kill(handle)
    curve.append(mean_of_silos(final))
    return {
        "global_accuracy": final.accuracy,
        "mean_of_silos": mean_of_silos(final),
        "best_mean_of_silos": max(curve[1:]) if len(curve) > 1 else curve[-1],
        "global_loss": final.loss,
        "per_silo": {name: s.accuracy for name, s in final.per_silo.items()},
        "kb_up_per_round": bytes_up / rounds / 1e3,
        "rejected": rejected,
        "seconds": time.perf_counter() - start,
    }


def mean_of_silos(result: Any) -> float:
    scores = [s.accuracy for s in result.per_silo.values()]
    return sum(scores) / len(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("strategies", nargs="*", default=STRATEGIES)
    parser.add_argument("--he", choices=["packed", "ckks", "off"], default="packed")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--set", action="append", default=[], metavar="STRATEGY:KEY=VALUE",
                        help="a [training] setting of one strategy: fedyogi:server_lr=0.03")  # fmt: skip
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    extra = dict(TUNED)
    for item in args.set:
        name, _, setting = item.partition(":")
        extra[name] = extra.get(name, "") + setting + "\n"
    console = Console(width=140)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")  # fmt: skip
    rows = []
    try:
        for name in args.strategies:
            with console.status(f"{name}, he={args.he}, {args.rounds} rounds"):
                row = {"strategy": name, "settings": extra.get(name, "").strip().replace("\n", ", ")}
                row.update(federate(example(args.he, name, extra.get(name, "")), args.rounds))
            rows.append(row)
            acc, mean = row["global_accuracy"], row["mean_of_silos"]
            console.print(f"{name:10} global {acc:.3f}  mean of silos {mean:.3f}")
            if args.json:
                args.json.write_text(json.dumps(rows, indent=2))
    finally:
        ray.shutdown()
    title = f"Strategies on the bundled example (he = {args.he}, {args.rounds} rounds, final model)"
    table = Table(title=title)
    for column in ("strategy", "settings", "global val acc", "mean of silos", "best mean of silos",
                   "global val loss", "kB up/round", "s"):  # fmt: skip
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            r["strategy"], r["settings"] or "defaults", f"{r['global_accuracy']:.3f}",
            f"{r['mean_of_silos']:.3f}",
            f"{r['best_mean_of_silos']:.3f}", f"{r['global_loss']:.4f}", f"{r['kb_up_per_round']:.1f}",
            f"{r['seconds']:.0f}",
        )  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    main()

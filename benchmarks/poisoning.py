"""Poisoning: one of the four hospitals of the bundled example attacks (plaintext mode, he = "off");
accuracy of FedAvg vs each robust rule, against the clean FedAvg run.

Attacks, by a `SiloWorker` subclass made here (it trains honestly, then replaces what it stages):
  scaled    w_global + 10 (w_k - w_global)   (a boosted update)
  flipped   w_global - 10 (w_k - w_global)   (sign-flipped, boosted)
  noise     w_global + a random direction of norm 10
  absent    sends nothing (still scores the global model): the other silos federate alone

The attacker is `long-beach` (160 training rows, a quarter of the federation's). Krum with
4 silos can assume f = 0 only (it needs n > 2f + 2); multi-Krum averages the best m = 3;
the clip_norm rule is FedAvg with ``--clip`` (0.1). Median and trimmed mean are weighted by
training rows (the default); median_uniform / trimmed_mean_uniform are the unweighted rules.
Seven federations, about 5 minutes:

    .venv/bin/python benchmarks/poisoning.py --json poisoning.json       # flipped, every rule
    .venv/bin/python benchmarks/poisoning.py --attacks none scaled flipped  # and each rule unattacked
    .venv/bin/python benchmarks/poisoning.py --attacks none flipped --rules median median_uniform
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import ray
from rich.console import Console
from rich.table import Table
from strategies import example, federate

from privacy.aggregate import bound_hint
from silo.actor import SiloWorker
from silo.messages import FitIns, FitRes
from silo.models import get_flat

ATTACKER = "long-beach"
BOOST = 10.0
RULES: dict[str, tuple[str, str]] = {  # name: (strategy, [training] lines)
    "fedavg": ("fedavg", ""),
    "median": ("median", ""),
    "trimmed_mean": ("trimmed_mean", "trim_fraction = 0.25"),
    "krum": ("krum", "byzantine = 0"),
    "multi_krum": ("multi_krum", "byzantine = 0\nmulti_krum_m = 3"),
    "clip_norm": ("fedavg", "clip_norm = {clip}"),
    "median_uniform": ("median", 'robust_weighting = "uniform"'),
    "trimmed_mean_uniform": ("trimmed_mean", 'trim_fraction = 0.25\nrobust_weighting = "uniform"'),
    "geometric_median": ("geometric_median", ""),
}


def attacker(kind: str) -> type[SiloWorker]:
    class Attacker(SiloWorker):
        """Trains like an honest silo, then stages a poisoned model instead of its own."""

        def fit(self, ins: FitIns) -> FitRes:
            self._load_global(ins.global_payload)
            start = get_flat(self._model)
            res = super().fit(ins)
            if self._staged is None:
                return res
            if kind == "absent":  # trains, so it still scores the global model, but sends nothing
                self._staged = None
                return dataclasses.replace(res, error="absent: the honest silos' federation")
            values, weight, exact = self._staged
            if kind == "scaled":
                poisoned = start + BOOST * (values - start)
            elif kind == "flipped":
                poisoned = start - BOOST * (values - start)
            else:
                direction = np.random.default_rng(ins.round).normal(size=values.size)
                poisoned = start + BOOST * direction / np.linalg.norm(direction)
            self._staged = (poisoned, weight, exact)
            return dataclasses.replace(res, bound_hint=bound_hint(poisoned, weight))

    Attacker.__name__ = Attacker.__qualname__ = f"Attacker_{kind}"
    return Attacker


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (attack, rule): mean accuracy over seeds, and the paired difference (same seed, so the
    same validation rows) to clean FedAvg and to the rule's own unattacked run where it was run."""
    by_key = {(r["attack"], r["rule"], r["seed"]): float(r["global_accuracy"]) for r in rows}
    out: list[dict[str, Any]] = []
    for attack, rule in dict.fromkeys((r["attack"], r["rule"]) for r in rows):
        runs = [r for r in rows if (r["attack"], r["rule"]) == (attack, rule)]
        seeds = [r["seed"] for r in runs]
        acc = np.array([r["global_accuracy"] for r in runs])
        vs_fedavg = acc - np.array([by_key["none", "fedavg", s] for s in seeds])
        own = [by_key.get(("none", rule, s)) for s in seeds]
        vs_own = acc - np.array(own, dtype=float) if None not in own else None
        out.append({
            "attack": attack, "rule": rule, "seeds": len(seeds), "accuracy": float(acc.mean()),
            "vs_clean_fedavg": float(vs_fedavg.mean()), "worst_vs_clean_fedavg": float(vs_fedavg.min()),
            "vs_own_clean": None if vs_own is None else float(vs_own.mean()),
            "mean_of_silos": float(np.mean([r["mean_of_silos"] for r in runs])),
        })  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # none: each rule without an attacker; absent: the attacker sends nothing (its rows stay out of
    # training but its validation rows are scored), what a rule that spots it perfectly would reach
    attacks = ["none", "absent", "scaled", "flipped", "noise"]
    parser.add_argument("--attacks", nargs="+", choices=attacks, default=["flipped"])
    parser.add_argument("--rules", nargs="+", choices=list(RULES), default=list(RULES))
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0],
                        help="data split and training seeds; differences are paired per seed")  # fmt: skip
    parser.add_argument("--clip", type=float, default=0.1, help="clip_norm of the clip_norm rule")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    console = Console(width=140)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")  # fmt: skip
    rows: list[dict[str, Any]] = []
    try:
        configs = [("none", "fedavg")]
        configs += [(a, r) for a in args.attacks for r in args.rules if (a, r) != ("none", "fedavg")]
        for seed in args.seeds:
            for attack, rule in configs:
                strategy, training = RULES[rule][0], RULES[rule][1].format(clip=args.clip)
                classes = {} if attack == "none" else {ATTACKER: attacker(attack)}
                with console.status(f"seed {seed}, attack {attack}, {rule}"):
                    row = {"attack": attack, "rule": rule, "seed": seed}
                    row["settings"] = training.replace("\n", ", ")
                    row.update(federate(example("off", strategy, training, seed), args.rounds, classes))
                rows.append(row)
                console.print(f"seed {seed} {attack:8} {rule:20} global {row['global_accuracy']:.3f}")
                if args.json:
                    args.json.write_text(json.dumps({"runs": rows, "summary": summarize(rows)}, indent=2))
    finally:
        ray.shutdown()
    title = (f"One of four silos ({ATTACKER}) attacks; he = off, {args.rounds} rounds, final model, "
             f"mean over seeds {args.seeds}")  # fmt: skip
    table = Table(title=title)
    for column in ("attack", "rule", "global val acc", "vs clean FedAvg", "worst seed", "vs own clean run",
                   "mean of silos"):  # fmt: skip
        table.add_column(column, justify="right")
    for r in summarize(rows):
        own = "" if r["vs_own_clean"] is None else f"{100 * r['vs_own_clean']:+.1f} pt"
        table.add_row(
            r["attack"], r["rule"], f"{r['accuracy']:.3f}", f"{100 * r['vs_clean_fedavg']:+.1f} pt",
            f"{100 * r['worst_vs_clean_fedavg']:+.1f} pt", own, f"{r['mean_of_silos']:.3f}",
        )  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    main()

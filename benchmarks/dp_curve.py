"""Accuracy against epsilon on the bundled example: record-level and silo-level DP, and no DP.

The four hospitals' silos are the real `SiloWorker` (data, federated preprocessing, DP-SGD
through Opacus or clipped updates plus noise shares, the privacy accountant), driven in this
process with plaintext aggregation: no Ray and no HE, which do not change the model (the packed
codec's weights differ from plaintext by 3e-5). DP noise is drawn from the OS's entropy, so each
setting is repeated and reported as mean and standard deviation.

    .venv/bin/python benchmarks/dp_curve.py --json dp_curve.json --plot docs/dp_curve.png
    .venv/bin/python benchmarks/dp_curve.py --epsilons 8 --repeats 1 --modes record   # quicker
    .venv/bin/python benchmarks/dp_curve.py --replot dp_curve.json --plot docs/dp_curve.png
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import re
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from orchestrator.metrics import GlobalEval, combine
from orchestrator.schema import agree
from pipelines import build
from pipelines.spec import bundled_example, parse_pipeline
from privacy.aggregate import WeightedSum
from privacy.codec import Payload, PlainCodec
from privacy.params import HEConfig
from privacy.signing import verify_update
from silo.actor import SiloWorker
from silo.messages import FitIns

EXAMPLE = bundled_example()


def pipeline_text(mode: str, epsilon: float, args: argparse.Namespace) -> str:
    text = EXAMPLE.read_text()
    text = re.sub(r'path = "([^"]+)"', lambda m: f'path = "{EXAMPLE.parent / m.group(1)}"', text)
    text = re.sub(r"(?m)^rounds = .*$", f"rounds = {args.rounds}", text)
    text = re.sub(r"(?m)^lr = .*$", f"lr = {args.lr}", text)
    text = re.sub(r"(?m)^local_epochs = .*$", f"local_epochs = {args.local_epochs}", text)
    text = re.sub(r"(?m)^batch_size = .*$", f"batch_size = {args.batch_size}", text)
    # Silo-level DP must be encrypted (the schema refuses he = "off": the orchestrator would see
    # single updates with a share of the noise); `federate` sums in plaintext, which equals it.
    privacy = 'he = "packed"' if mode == "silo" else 'he = "off"'
    if mode != "off" and math.isfinite(epsilon):
        clip = args.clip if mode == "record" else args.silo_clip
        privacy += f'\ndp = "{mode}"\ntarget_epsilon = {epsilon}\ndelta = {args.delta}'
        privacy += f"\nmax_grad_norm = {clip}"
    return re.sub(r"(?m)^he = .*$", privacy, text)


def _sum(silos: list[SiloWorker], hints: list[float], phase: str) -> WeightedSum:
    """The orchestrator's part: agree the largest range, verify and add the signed encodings."""
    running = WeightedSum(PlainCodec())
    bound = max(hints)
    for s in silos:
        update = s.encode_staged(f"{phase}/{s.name}", bound)
        running.add(verify_update(update, s.name, f"{phase}/{s.name}", s.public_keys().signing))
    return running


def federate(text: str) -> tuple[GlobalEval, float | None, float | None]:
    """Run the pipeline's rounds in process; (final evaluation, max epsilon, max noise multiplier)."""
    loaded = parse_pipeline(text, EXAMPLE)
    silos = [
        SiloWorker(dataclasses.replace(spec, he=HEConfig(scheme="off"))) for spec in build.silo_specs(loaded)
    ]
    schema = agree([s.describe() for s in silos])
    sums = _sum(silos, [s.stats_sums(schema) for s in silos], "stats-1").total()
    squares = _sum(silos, [s.stats_squares(sums) for s in silos], "stats-2").total()
    for s in silos:
        s.finish_preprocessing(squares)
    strategy = build.strategy(loaded)
    payload: Payload | None = None
    epsilon: float | None = None
    sigma: float | None = None
    for r in range(1, loaded.spec.rounds + 1):
        results = [s.fit(FitIns(r, payload, strategy.configure_fit(r))) for s in silos]
        failed = [res.error for res in results if res.error]
        if failed:
            raise RuntimeError(f"round {r}: {failed}")
        epsilon = max((res.epsilon for res in results if res.epsilon is not None), default=None)
        sigma = max((res.noise_multiplier for res in results if res.noise_multiplier), default=None)
        payload = _sum(silos, [res.bound_hint for res in results], f"round-{r}").mean()
    return combine(loaded.spec.rounds, [s.evaluate(payload) for s in silos]), epsilon, sigma


def measure(mode: str, epsilon: float, args: argparse.Namespace) -> dict[str, Any]:
    runs = []
    start = time.perf_counter()
    for _ in range(args.repeats if math.isfinite(epsilon) else 1):  # no DP: deterministic
        final, spent, sigma = federate(pipeline_text(mode, epsilon, args))
        per_silo = [s.accuracy for s in final.per_silo.values()]
        runs.append((final.accuracy, final.auc or float("nan"), statistics.fmean(per_silo), spent, sigma))

    def mean_sd(i: int) -> tuple[float, float]:
        values = [r[i] for r in runs]
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    return {
        "mode": mode,
        "target_epsilon": epsilon if math.isfinite(epsilon) else None,
        "repeats": len(runs),
        "accuracy": mean_sd(0),
        "auc": mean_sd(1),
        "mean_of_silos_accuracy": mean_sd(2),
        "epsilon_spent": max((r[3] for r in runs if r[3] is not None), default=None),
        "noise_multiplier": max((r[4] for r in runs if r[4] is not None), default=None),
        "seconds": time.perf_counter() - start,
    }


def plot(rows: list[dict[str, Any]], path: Path, baseline: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(6, 4))
    for mode, label in (("record", "record-level (DP-SGD)"), ("silo", "silo-level (distributed noise)")):
        points = [r for r in rows if r["mode"] == mode]
        if not points:
            continue
        xs = [r["target_epsilon"] for r in points]
        axis.errorbar(xs, [r["accuracy"][0] for r in points], yerr=[r["accuracy"][1] for r in points],
                      marker="o", capsize=3, label=label)  # fmt: skip
    axis.axhline(baseline["accuracy"][0], color="gray", linestyle="--", label="no DP (epsilon = inf)")
    axis.set(xscale="log", xlabel="epsilon (delta = 1e-5)", ylabel="global validation accuracy",
             title="Heart disease, 4 silos: accuracy against epsilon")  # fmt: skip
    from matplotlib.ticker import NullFormatter

    axis.set_xticks([1, 3, 8], labels=["1", "3", "8"])
    axis.xaxis.set_minor_formatter(NullFormatter())
    axis.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 3.0, 8.0])
    parser.add_argument("--modes", nargs="+", choices=("record", "silo"), default=["record", "silo"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--clip", type=float, default=1.0, help="record level: per-sample gradient bound")
    parser.add_argument("--silo-clip", type=float, default=1.0, help="silo level: update norm bound")
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--replot", type=Path, help="only draw --plot from a --json file of an earlier run")
    args = parser.parse_args()
    if args.replot:
        saved = json.loads(args.replot.read_text())["rows"]
        plot(saved[1:], args.plot, saved[0])
        return
    logging.basicConfig(level=logging.ERROR)
    warnings.simplefilter("ignore")
    console = Console(width=140)
    baseline = measure("off", math.inf, args)
    rows = []
    for mode in args.modes:
        for epsilon in args.epsilons:
            console.print(f"{mode} epsilon {epsilon:g} ...")
            rows.append(measure(mode, epsilon, args))
    table = Table(
        title=f"bundled example, {args.rounds} rounds, lr {args.lr}, batch {args.batch_size}, "
        f"delta {args.delta:g}; mean ± sd over {args.repeats} runs",
        title_justify="left",
    )
    for column in ("dp", "target epsilon", "epsilon spent", "noise multiplier", "clip", "global val acc",
                   "AUC", "mean of silos acc", "s"):  # fmt: skip
        table.add_column(column, justify="left" if column == "dp" else "right")
    for r in [baseline, *rows]:
        clip = {"off": "", "record": f"{args.clip:g}", "silo": f"{args.silo_clip:g}"}[r["mode"]]
        table.add_row(
            r["mode"], "inf" if r["target_epsilon"] is None else f"{r['target_epsilon']:g}",
            "" if r["epsilon_spent"] is None else f"{r['epsilon_spent']:.3f}",
            "" if r["noise_multiplier"] is None else f"{r['noise_multiplier']:.3f}", clip,
            "{:.3f} ± {:.3f}".format(*r["accuracy"]), "{:.3f} ± {:.3f}".format(*r["auc"]),
            "{:.3f} ± {:.3f}".format(*r["mean_of_silos_accuracy"]), f"{r['seconds']:.0f}",
        )  # fmt: skip
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps({"settings": vars(args) | {"json": None, "plot": None},
                                         "rows": [baseline, *rows]}, indent=2, default=str))  # fmt: skip
    if args.plot:
        plot(rows, args.plot, baseline)
        console.print(f"plot written to {args.plot}")


if __name__ == "__main__":
    main()

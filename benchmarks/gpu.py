"""Silos on a GPU: where each silo trains, how Ray shares one GPU between the four silos of the
bundled example (fractional GPUs: ``[resources] gpus_per_silo = "auto"`` gives each 1/4), and
what it costs or saves against the same federation on CPU, side by side in one run.

Each configuration is the real federation (`pipelines.federation.Federation`: placement, key
exchange, federated preprocessing, packed HE rounds), without MLflow. Per round: the slowest
silo's local training and the whole round (training, encryption, adding, the orchestrator).

    python benchmarks/gpu.py --json gpu.json                    # on a machine with a GPU
    python benchmarks/gpu.py --modes cpu --models logistic --rounds 2   # anywhere
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import ray
from rich.console import Console
from rich.table import Table
from timed_run import timed_federation

from pipelines.federation import start_ray
from pipelines.spec import LoadedPipeline, bundled_example, parse_pipeline

MODELS = {  # name: ([model] lines, local epochs)
    "logistic": ('kind = "logistic"', 1),  # the bundled example as it ships
    "mlp": ('kind = "mlp"\nhidden = [256, 256]', 20),  # ~72k parameters, 20 local epochs
    "wide": ('kind = "mlp"\nhidden = [2048, 2048]', 20),  # ~4.3M parameters: where a GPU starts to pay
}
GPUS = {"cpu": "0", "gpu": '"auto"'}


def pipeline(model: str, mode: str, dp: str = "off") -> LoadedPipeline:
    lines, epochs = MODELS[model]
    text = bundled_example().read_text()
    if dp != "off":  # a fixed noise multiplier: no calibration, the same noise in both modes
        text = re.sub(r"(?m)^he = .*$", f'\\g<0>\ndp = "{dp}"\nnoise_multiplier = 1.0\ndelta = 1e-3', text)
    text = re.sub(r"(?m)^kind = .*$", lines, text)
    text = re.sub(r"(?m)^local_epochs = .*$", f"local_epochs = {epochs}", text)
    text += f"\n[resources]\ngpus_per_silo = {GPUS[mode]}\n"
    return parse_pipeline(text, bundled_example())


def gpu_processes() -> list[str]:
    """nvidia-smi's compute processes (pid, name, memory): the silos holding a CUDA context."""
    if shutil.which("nvidia-smi") is None:
        return []
    out = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid,process_name,used_memory", "--format=csv,noheader"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def federate(loaded: LoadedPipeline, rounds: int, folder: Path) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def watch(r: int) -> None:
        if r == 0:  # while every silo holds its share
            seen["free_gpus"] = ray.available_resources().get("GPU", 0.0)
        elif r == 1:  # CUDA contexts exist once silos have trained
            seen["processes"] = gpu_processes()

    run = timed_federation(loaded, rounds, folder, "gpu", watch)
    return {
        "devices": {r.silo: r.device for r in run.report.ready},
        "gpus_per_silo": {n: p.num_gpus for n, p in run.placement.items()},
        "cluster_gpus": ray.cluster_resources().get("GPU", 0.0),
        "free_gpus_while_running": seen["free_gpus"],
        "gpu_processes": seen.get("processes", []),
        "n_parameters": run.report.n_parameters,
        "setup_s": run.setup_s,
        "round1_s": run.records[0].seconds,
        "train_s": statistics.mean(max(r.train_seconds.values()) for r in run.later),
        "round_s": statistics.mean(r.seconds for r in run.later),
        "accuracy": run.final.accuracy,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", choices=list(GPUS), default=list(GPUS))
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dp", choices=["off", "record", "silo"], default="off")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    args = parser.parse_args()
    start_ray("gpu-benchmark", None, log_to_driver=False)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        for model in args.models:
            for mode in args.modes:
                measured = federate(pipeline(model, mode, args.dp), args.rounds, Path(folder))
                row = {"model": model, "mode": mode, "dp": args.dp, **measured}
                print(json.dumps(row), flush=True)
                results.append(row)
    title = f"Bundled example, 4 silos, packed HE, dp {args.dp}, {args.rounds} rounds (means exclude round 1)"
    table = Table(title=title)
    columns = ["model", "silos on", "GPU per silo", "setup s", "round 1 s", "training s", "round s", "acc"]
    for column in columns:
        table.add_column(column, justify="right")
    for r in results:
        devices = ",".join(sorted(set(r["devices"].values())))
        share = ",".join(f"{g:g}" for g in sorted(set(r["gpus_per_silo"].values())))
        table.add_row(
            r["model"], devices, share, f"{r['setup_s']:.1f}", f"{r['round1_s']:.2f}",
            f"{r['train_s']:.3f}", f"{r['round_s']:.2f}", f"{r['accuracy']:.3f}",
        )  # fmt: skip
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    ray.shutdown()


if __name__ == "__main__":
    main()

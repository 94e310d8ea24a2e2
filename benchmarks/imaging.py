"""Task pipelines measured: the bundled breast-ultrasound example (a 56k-parameter CNN over three
hospitals' images) with packed HE and without, and the LoRA task's adapters against federating
its whole transformer, side by side in one run.

Each configuration is the real federation (`pipelines.federation.Federation`: placement, key
exchange, the task opened on every silo, rounds), without MLflow. Per round: seconds (the mean
of rounds 2.., round 1 pays start-up), each silo's local training images per second, bytes up
and down, and the validation figures at the end.

    python benchmarks/imaging.py --json docs/results/imaging.json
    python benchmarks/imaging.py --configs breast-packed --rounds 2      # a quick look
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import ray
from rich.console import Console
from rich.table import Table
from timed_run import timed_federation

from pipelines.federation import start_ray
from pipelines.spec import LoadedPipeline, bundled_example, parse_pipeline
from silo.task import load_task

LORA_TASK = Path(__file__).resolve().parents[1] / "tests" / "silo" / "tasks" / "lora_task.py"
CONFIGS = ("breast-packed", "breast-off", "lora-adapters", "lora-whole")


def breast(he: str) -> LoadedPipeline:
    path = bundled_example("breast-ultrasound")
    text = path.read_text().replace('he = "packed"', f'he = "{he}"')
    return parse_pipeline(text, path)


def lora(folder: Path, whole: bool) -> LoadedPipeline:
    base = load_task(str(LORA_TASK), kind="binary").module.write_base(folder / "base.pt", seed=0)
    silos = "".join(f'\n[[silos]]\nname = "{s}"\npath = "{folder}"\n' for s in ("north", "east", "west"))
    text = f"""name = "lora"
rounds = 5
min_silos = 2
[task]
module = "{LORA_TASK}"
kind = "binary"
[task.config]
base = "{base}"
full = {"true" if whole else "false"}
{silos}
[training]
optimizer = "adam"
lr = 0.01
"""
    return parse_pipeline(text, folder / "lora.toml")


def federate(loaded: LoadedPipeline, rounds: int, folder: Path) -> dict[str, Any]:
    run = timed_federation(loaded, rounds, folder, "imaging")
    epochs = loaded.spec.training.local_epochs
    train_rows = {r.silo: r.train_rows for r in run.report.ready}
    speed = {
        silo: statistics.mean(train_rows[silo] * epochs / r.train_seconds[silo] for r in run.later)
        for silo in train_rows
    }
    return {
        "devices": sorted({r.device for r in run.report.ready}),
        "n_parameters": run.report.n_parameters,
        "setup_s": run.setup_s,
        "round1_s": run.records[0].seconds,
        "round_s": statistics.mean(r.seconds for r in run.later),
        "images_per_s": speed,
        "bytes_up": statistics.mean(r.bytes_up for r in run.later),
        "bytes_down": statistics.mean(r.bytes_down for r in run.later),
        "metrics": run.final.metrics,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the raw results here")
    args = parser.parse_args()
    start_ray("imaging-benchmark", None, log_to_driver=False)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for config in args.configs:
            task, variant = config.split("-")
            loaded = breast(variant) if task == "breast" else lora(folder, whole=variant == "whole")
            row = {"config": config, "he": loaded.spec.privacy.he, **federate(loaded, args.rounds, folder)}
            print(json.dumps(row), flush=True)
            results.append(row)
    table = Table(title=f"Task pipelines, {args.rounds} rounds, 3 silos (means exclude round 1)")
    columns = ("config", "HE", "exchanged", "round s", "images/s per silo", "KB up/round", "KB down/round")
    for column in (*columns, "accuracy", "AUC"):
        table.add_column(column, justify="right")
    for r in results:
        speed = ", ".join(f"{v:.0f}" for v in r["images_per_s"].values())
        table.add_row(
            r["config"], r["he"], str(r["n_parameters"]), f"{r['round_s']:.2f}", speed,
            f"{r['bytes_up'] / 1024:.1f}", f"{r['bytes_down'] / 1024:.1f}",
            *(f"{r['metrics'].get(name, float('nan')):.3f}" for name in ("accuracy", "auc")),
        )  # fmt: skip
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    ray.shutdown()


if __name__ == "__main__":
    main()

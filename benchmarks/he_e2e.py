"""End to end: a 1M-parameter MLP on the bundled four-hospital example, HE on against off.

Each scheme is one `fedsilo run` in a fresh subprocess (its own local Ray and MLflow store
in a temporary folder), same pipeline, same rounds; the table gives seconds and bytes per
round as the run summary records them.

    .venv/bin/python benchmarks/he_e2e.py --json he_e2e.json
    .venv/bin/python benchmarks/he_e2e.py --rounds 3 --schemes packed off   # quicker
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "pipelines" / "examples" / "heart_disease" / "pipeline.toml"
SCHEMES = ("packed", "ckks", "off")


def pipeline_text(scheme: str, hidden: list[int], rounds: int) -> str:
    """The bundled example with absolute silo paths, an MLP and the scheme under test."""
    text = EXAMPLE.read_text()
    text = re.sub(r'path = "([^"]+)"', lambda m: f'path = "{EXAMPLE.parent / m.group(1)}"', text)
    text = re.sub(r'(?m)^kind = "logistic"$', f'kind = "mlp"\nhidden = {hidden}', text)
    text = re.sub(r"(?m)^he = .*$", f'he = "{scheme}"', text)
    return re.sub(r"(?m)^rounds = .*$", f"rounds = {rounds}", text)


def run(scheme: str, hidden: list[int], rounds: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix=f"he-e2e-{scheme}-"))
    pipeline = folder / "pipeline.toml"
    pipeline.write_text(pipeline_text(scheme, hidden, rounds))
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", str(pipeline), "--summary-json", "summary.json"],
        cwd=folder, capture_output=True, text=True, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return {"scheme": scheme, "error": done.stderr[-2000:], "folder": str(folder)}
    summary = json.loads((folder / "summary.json").read_text())
    per_round = summary["per_round"]
    later = per_round[1:] or per_round
    return {
        "scheme": scheme,
        "model_parameters": summary["model_parameters"],
        "wall_s": wall,
        "setup_s": summary["setup_seconds"],
        "round1_s": per_round[0]["seconds"],
        "round_s": statistics.fmean(r["seconds"] for r in later),
        "bytes_up_per_round": statistics.fmean(r["bytes_up"] for r in per_round),
        "bytes_down_per_round": statistics.fmean(r["bytes_down"] for r in later),
        "final_accuracy": summary["final"]["global_val_accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hidden", type=int, nargs="+", default=[1024, 960], help="MLP widths (1M params)")
    parser.add_argument("--schemes", nargs="+", choices=SCHEMES, default=list(SCHEMES))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    console = Console(width=140)
    rows = []
    for scheme in args.schemes:
        console.print(f"running he = {scheme!r} ...")
        rows.append(run(scheme, args.hidden, args.rounds))
    table = Table(
        title=f"fedsilo run: MLP {args.hidden}, 4 silos, {args.rounds} rounds", title_justify="left"
    )
    for column in ("he", "parameters", "wall s", "set-up s", "round 1 s", "round s (2..)", "up MB/round",
                   "down MB/round", "val acc"):  # fmt: skip
        table.add_column(column, justify="left" if column == "he" else "right")
    for r in rows:
        if "error" in r:
            table.add_row(r["scheme"], "failed", r["error"][-200:])
            continue
        table.add_row(
            r["scheme"], f"{r['model_parameters']:,}", f"{r['wall_s']:.1f}", f"{r['setup_s']:.1f}",
            f"{r['round1_s']:.2f}", f"{r['round_s']:.2f}", f"{r['bytes_up_per_round'] / 1e6:.2f}",
            f"{r['bytes_down_per_round'] / 1e6:.2f}", f"{r['final_accuracy']:.4f}",
        )  # fmt: skip
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

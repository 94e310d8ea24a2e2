"""The model lifecycle on the bundled example: what each command costs, what warm start buys.

In a temporary folder (its own MLflow store), as a user runs it: a cold `fedsilo run`, the
first promotion, a warm-started run from @champion, `fedsilo evaluate`, `fedsilo promote`
and `fedsilo review`, each a fresh process (its own local Ray where it needs one). Prints
wall times, and the global validation accuracy by round for the cold and the warm run.

    .venv/bin/python benchmarks/lifecycle.py --json lifecycle.json
    .venv/bin/python benchmarks/lifecycle.py --rounds 5 --he off      # quicker
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "pipelines" / "examples" / "heart_disease" / "pipeline.toml"
MODEL = "heart-disease-classifier"


def pipeline_text(he: str, rounds: int, warm: bool) -> str:
    text = EXAMPLE.read_text()
    text = re.sub(r'path = "([^"]+)"', lambda m: f'path = "{EXAMPLE.parent / m.group(1)}"', text)
    text = re.sub(r"(?m)^he = .*$", f'he = "{he}"', text)
    text = re.sub(r"(?m)^rounds = .*$", f"rounds = {rounds}", text)
    if warm:
        text = text.replace('kind = "logistic"', f'kind = "logistic"\nfrom = "models:/{MODEL}@champion"')
    return text


def fedsilo(folder: Path, *args: str) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=folder, capture_output=True,
                            text=True, timeout=900)  # fmt: skip
    seconds = time.perf_counter() - started
    if result.returncode not in (0, 1) or (result.returncode == 1 and args[0] != "evaluate"):
        raise SystemExit(f"fedsilo {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return seconds, result.stdout


def accuracy_by_round(folder: Path, run_id: str) -> dict[int, float]:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{folder / 'mlruns.db'}")
    return {m.step: m.value for m in client.get_metric_history(run_id, "global/val_accuracy")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--he", default="packed", choices=["packed", "ckks", "off"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    walls: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "cold.toml").write_text(pipeline_text(args.he, args.rounds, warm=False))
        (folder / "warm.toml").write_text(pipeline_text(args.he, args.rounds, warm=True))
        walls["fedsilo run (cold)"], _ = fedsilo(folder, "run", "cold.toml", "--summary-json", "cold.json")
        walls["fedsilo promote (first)"], _ = fedsilo(folder, "promote", MODEL, "1")
        walls["fedsilo run (warm from @champion)"], _ = fedsilo(folder, "run", "warm.toml", "--summary-json",
                                                                "warm.json")  # fmt: skip
        walls["fedsilo evaluate (4 silos, 2 models)"], _ = fedsilo(
            folder,
            "evaluate",
            "warm.toml",
            "--model",
            f"models:/{MODEL}/2",
            "--against",
            f"models:/{MODEL}@champion",
        )
        walls["fedsilo promote (--force)"], _ = fedsilo(
            folder, "promote", MODEL, "2", "--force", "--reason", "bench"
        )
        walls["fedsilo review"], _ = fedsilo(folder, "review", MODEL)
        cold, warm = (json.loads((folder / f"{n}.json").read_text()) for n in ("cold", "warm"))
        curves = {
            "cold": accuracy_by_round(folder, cold["run_id"]),
            "warm": accuracy_by_round(folder, warm["run_id"]),
        }
    console = Console()
    table = Table(title=f"Lifecycle commands, bundled example, HE {args.he}, {args.rounds} rounds",
                  title_justify="left")  # fmt: skip
    table.add_column("command")
    table.add_column("wall s", justify="right")
    for name, seconds in walls.items():
        table.add_row(name, f"{seconds:.1f}")
    console.print(table)
    steps = [s for s in (0, 1, 2, 5, 10, args.rounds) if s <= args.rounds]
    acc = Table(
        title="Global validation accuracy after round r (0 = the initial model)", title_justify="left"
    )
    acc.add_column("run")
    for s in dict.fromkeys(steps):
        acc.add_column(f"r={s}", justify="right")
    for name, curve in curves.items():
        acc.add_row(name, *(f"{curve.get(s, float('nan')):.3f}" for s in dict.fromkeys(steps)))
    console.print(acc)
    if args.json:
        result = {"walls": walls, "curves": curves, "he": args.he, "rounds": args.rounds}
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Flower vs fedsilo: one whole federated run of each, side by side, in one sitting.

Four hospital silos (the bundled UCI heart-disease example), logistic regression,
FedAvg, 15 rounds, all silos every round, 2 CPUs for Ray. Three rows:

- Flower (``flwr.simulation.run_simulation``, Ray backend, 4 clients at 0.25 CPU each),
  run by ``benchmarks/flower_app.py`` under its own virtualenv ``.venv-flower``;
- fedsilo with ``he = "off"`` (plaintext aggregation);
- fedsilo with ``he = "ckks"``;
- fedsilo with ``he = "packed"`` (the bundled pipeline as shipped: packed BFV, the default).

Both sides use fedsilo's own data loading, federated preprocessing, model and
training code, so they train the same model on the same rows. Every run is a fresh
subprocess timed from spawn to exit (what a user waits for); each also reports
its Ray start, set-up and per-round times. fedsilo runs in a temporary folder, so its
MLflow store (``mlruns.db``) never lands in the repository. Each run starts its own local
Ray (``RAY_ADDRESS=local``), bound to 127.0.0.1 without a dashboard.

One-time set-up of Flower's virtualenv (Flower pins its own Ray, so it stays out of .venv):

    python3.11 -m venv .venv-flower
    .venv-flower/bin/pip install torch==2.13.0 "flwr[simulation]" pandas numpy
    .venv-flower/bin/pip install --no-deps -e .

Then, from the repository root:

    .venv/bin/python benchmarks/vs_flower.py --json bench.json
    .venv/bin/python benchmarks/vs_flower.py --rounds 5 --systems flower fedsilo-off   # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
FLOWER_APP = REPO / "benchmarks" / "flower_app.py"
FLOWER_PYTHON = REPO / ".venv-flower" / "bin" / "python"
SYSTEMS = ("flower", "fedsilo-off", "fedsilo-ckks", "fedsilo-packed")
CHILD_TIMEOUT_S = 900.0


@dataclass
class Row:
    """One system's whole run; seconds unless named otherwise."""

    system: str
    label: str
    ok: bool
    wall_s: float  # subprocess spawn -> exit
    startup_s: float | None = None  # spawn -> Ray up (interpreter, imports, ray.init)
    ray_init_s: float | None = None  # ray.init alone
    setup_s: float | None = None  # data, schema, federated statistics (fedsilo: and HE keys)
    round1_s: float | None = None
    mean_round_s: float | None = None  # rounds 2..N
    rounds_s: float | None = None  # rounds 1..N
    other_s: float | None = None  # wall - start-up - set-up - rounds
    final_accuracy: float | None = None  # global model, weighted over every silo's validation rows
    bytes_up_per_round: float | None = None
    bytes_down_per_round: float | None = None
    per_round_s: list[float] = field(default_factory=list)
    per_round_accuracy: list[float | None] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    detail: dict[str, float] = field(default_factory=dict)  # where "other" went, from the child
    notes: str = ""
    error: str | None = None


# -- child: one fedsilo run (the parent starts this file again with --child) ---------------


def fedsilo_child(he: str, rounds: int, out: Path) -> int:
    """Run the bundled pipeline with ``he`` in this process; write timings to ``out``."""
    from importlib.metadata import version

    import ray

    import pipelines.runner as runner
    from pipelines.spec import bundled_example, parse_pipeline

    path = bundled_example()
    text = path.read_text()
    text = re.sub(r"(?m)^he = .*$", f'he = "{he}"', text)
    loaded = parse_pipeline(text, path)  # relative silo paths still resolve against the example
    if loaded.spec.privacy.he != he:
        raise SystemExit(f"could not set he = {he!r} in {path}")
    options = runner.RunOptions(rounds=rounds)
    t_imported = time.time()
    # Exactly what `fedsilo run` does: run_federation starts Ray (and, beside it, opens the
    # MLflow store and imports the silo code), runs, stops Ray, and times both ends itself.
    summary = runner.run_federation(loaded, options, Console(file=sys.stdout, width=120))
    t_run_end = time.time()
    result = {
        "system": f"fedsilo-{he}",
        "fedsilo_version": version("fedsilo"),
        "ray_version": ray.__version__,
        "torch_version": version("torch"),
        "tenseal_version": version("tenseal"),
        "mlflow_version": version("mlflow"),
        "t_imported": t_imported,
        "t_ray_up": t_imported + summary.ray_start_seconds,  # Ray's start is run_federation's first long step
        "t_run_end": t_run_end,
        "t_end": time.time(),
        "ray_init_s": summary.ray_start_seconds,
        "shutdown_s": summary.ray_shutdown_seconds,
        "summary": summary.to_dict(),
    }
    out.write_text(json.dumps(result))
    return 0 if summary.rounds_completed == rounds else 1


# -- parent: spawn, time, tabulate -------------------------------------------------------------


def _child_env(drop: tuple[str, ...] = ()) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", *drop)}
    # A fresh local Ray per run, never a cluster someone started on this machine with
    # `ray start` (ray.init without an address would try to join that one).
    env["RAY_ADDRESS"] = "local"
    return env


def _run_child(cmd: list[str], workdir: Path, env: dict[str, str]) -> tuple[float, float, int]:
    """Run to completion with output in workdir/*.log; return (spawn epoch, wall seconds, rc)."""
    with (workdir / "stdout.log").open("wb") as stdout, (workdir / "stderr.log").open("wb") as stderr:
        spawned = time.time()
        start = time.perf_counter()
        proc = subprocess.run(
            cmd, cwd=workdir, env=env, stdout=stdout, stderr=stderr, timeout=CHILD_TIMEOUT_S, check=False
        )
        return spawned, time.perf_counter() - start, proc.returncode


def _tail(workdir: Path, lines: int = 15) -> str:
    text = ""
    for name in ("stderr.log", "stdout.log"):
        log = workdir / name
        if log.is_file():
            text += "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) + "\n"
    return text.strip()


def _split_rounds(row: Row, per_round: list[dict[str, Any]]) -> None:
    seconds = [float(r["seconds"]) for r in per_round]
    row.per_round_s = seconds
    row.per_round_accuracy = [r.get("global_val_accuracy") for r in per_round]
    if seconds:
        row.round1_s = seconds[0]
        row.rounds_s = sum(seconds)
    if len(seconds) > 1:
        row.mean_round_s = statistics.fmean(seconds[1:])
    up = [r["bytes_up"] for r in per_round if r.get("bytes_up") is not None]
    down = [r["bytes_down"] for r in per_round[1:] if r.get("bytes_down") is not None]
    row.bytes_up_per_round = statistics.fmean(up) if up else None
    row.bytes_down_per_round = statistics.fmean(down) if down else None


def _incomplete(per_round: list[dict[str, Any]], rounds: int, silos: int) -> str | None:
    """Why the run does not count (a round missing, or a silo missing from one), or None."""
    if len(per_round) != rounds:
        return f"{len(per_round)} of {rounds} rounds ran"
    bad = [r for r in per_round if r.get("participants") != silos]
    if not bad:
        return None
    reasons = [str(f) for r in bad for f in r.get("failures", [])]
    first = reasons[0][:300] if reasons else "unknown"
    return f"rounds {[r['round'] for r in bad]} lost a silo; first failure: {first}"


def _other(row: Row) -> None:
    parts = (row.startup_s, row.setup_s, row.rounds_s)
    if all(p is not None for p in parts):
        row.other_s = row.wall_s - sum(p for p in parts if p is not None)


def _tidy(row: Row, workdir: Path, keep: bool) -> None:
    """Remove a good run's folder; keep a failed (or --keep-logs) one and say where it is."""
    if not keep and row.ok:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        row.notes += f" (logs in {workdir})"


def run_flower(python: Path, rounds: int, client_cpus: float, keep: bool) -> Row:
    workdir = Path(tempfile.mkdtemp(prefix="bench-flower-"))
    out = workdir / "result.json"
    env = _child_env(drop=("VIRTUAL_ENV",))
    env["FLWR_TELEMETRY_ENABLED"] = "0"  # no phoning home from a benchmark (and no network here)
    cmd = [str(python), str(FLOWER_APP), "--rounds", str(rounds), "--client-cpus", str(client_cpus)]
    spawned, wall, rc = _run_child([*cmd, "--out", str(out)], workdir, env)
    row = Row("flower", "Flower FedAvg", ok=False, wall_s=wall)
    try:
        if not out.is_file():
            row.error = f"exit {rc}: {_tail(workdir)}"
            return row
        res = json.loads(out.read_text())
        row.versions = {"flwr": res["flwr_version"], "ray": res["ray_version"], "torch": res["torch_version"]}
        row.label = f"Flower {res['flwr_version']}"
        row.startup_s = res["t_ray_up"] - spawned
        row.ray_init_s = res["ray_init_s"]
        row.setup_s = res["setup_s"]
        _split_rounds(row, res["per_round"])
        row.final_accuracy = res["final_accuracy"]
        rounds_run = res["per_round"]
        row.detail = {
            "simulation_s": res["simulation_s"],
            "simulation_start_to_round1_s": rounds_run[0]["start"] - res["t_sim_start"] if rounds_run else 0,
            "last_round_to_simulation_end_s": res["t_sim_start"] + res["simulation_s"] - rounds_run[-1]["end"]
            if rounds_run
            else 0,
            "ray_shutdown_s": res["shutdown_s"],
            "interpreter_exit_s": wall - (res["t_end"] - spawned),
            "spawn_to_imported_s": res["t_imported"] - spawned,
        }
        row.notes = (
            f"{client_cpus} CPU per client; actor pool start and ClientApp imports fall in round 1; "
            "set-up = plaintext federated statistics in the driver; bytes = npy-serialized float32"
        )
        _other(row)
        row.error = _incomplete(res["per_round"], rounds, res["silos"])
        row.ok = row.error is None
        return row
    finally:
        _tidy(row, workdir, keep)


def run_fedsilo(he: str, rounds: int, keep: bool) -> Row:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-fedsilo-{he}-"))
    out = workdir / "result.json"
    env = _child_env()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", he, "--rounds", str(rounds)]
    spawned, wall, rc = _run_child([*cmd, "--child-out", str(out)], workdir, env)
    row = Row(f"fedsilo-{he}", f"fedsilo HE {he}", ok=False, wall_s=wall)
    try:
        if rc != 0 or not out.is_file():
            row.error = f"exit {rc}: {_tail(workdir)}"
            return row
        res = json.loads(out.read_text())
        summary = res["summary"]
        row.versions = {
            "fedsilo": res["fedsilo_version"],
            "ray": res["ray_version"],
            "torch": res["torch_version"],
            "tenseal": res["tenseal_version"],
            "mlflow": res["mlflow_version"],
        }
        row.startup_s = res["t_ray_up"] - spawned
        row.ray_init_s = res["ray_init_s"]
        row.setup_s = summary["setup_seconds"]  # the driver's wait, actor start-up included
        _split_rounds(row, summary["per_round"])
        row.final_accuracy = summary["final"].get("global_val_accuracy")
        row.detail = {
            "run_federation_s": summary["wall_seconds"],
            "publish_s": summary["publish_seconds"],
            "ray_shutdown_s": res["shutdown_s"],
            "interpreter_exit_s": wall - (res["t_end"] - spawned),
            "spawn_to_imported_s": res["t_imported"] - spawned,
        }
        row.notes = (
            "set-up = the driver's wait for actor start, data checks, schema, HE keys and two federated "
            "statistics passes; rounds timed by the orchestrator; other = MLflow tracking, final "
            "evaluation, model registry publish, Ray shutdown"
        )
        _other(row)
        row.error = _incomplete(summary["per_round"], rounds, len(summary["silos"]))
        row.ok = row.error is None
        return row
    finally:
        _tidy(row, workdir, keep)


def _s(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _bytes(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} B"


def table(rows: list[Row], rounds: int) -> Table:
    t = Table(
        title=f"Flower vs fedsilo: 4 heart-disease silos, logistic regression, FedAvg, {rounds} rounds",
        title_justify="left",
        caption=(
            "run: subprocess spawn to exit, as a user waits. start-up: spawn to Ray up (interpreter, "
            "imports, ray.init). set-up: data, schema, federated statistics (fedsilo: also actor start "
            f"and HE keys). rounds 2-{rounds}: mean per round, warm-up excluded. other: run - start-up "
            "- set-up - rounds. val acc: final global model on every silo's validation rows. "
            "up/round: all silos' updates of one round."
        ),
        caption_justify="left",
    )
    columns = ("system", "run s", "start-up s", "ray.init s", "set-up s", "round 1 s")
    columns += (f"rounds 2-{rounds} s", "other s", "val acc", "up/round")
    for name in columns:
        t.add_column(name, justify="left" if name == "system" else "right")
    for r in rows:
        if not r.ok:
            t.add_row(r.label, _s(r.wall_s), "[red]failed[/]", *["-"] * (len(columns) - 3))
            continue
        t.add_row(
            r.label,
            _s(r.wall_s),
            _s(r.startup_s),
            _s(r.ray_init_s),
            _s(r.setup_s),
            _s(r.round1_s),
            _s(r.mean_round_s, 3),
            _s(r.other_s),
            _s(r.final_accuracy, 4),
            _bytes(r.bytes_up_per_round),
        )
    return t


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Flower vs fedsilo (HE on and off), one whole run each.")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", type=Path, help="write the rows (and run metadata) as JSON here")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--flower-python", type=Path, default=FLOWER_PYTHON)
    parser.add_argument("--client-cpus", type=float, default=0.25, help="Ray num_cpus per Flower client")
    parser.add_argument("--keep-logs", action="store_true", help="keep each run's folder and logs")
    parser.add_argument("--child", choices=("off", "ckks", "packed"), help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:  # and exit as the fedsilo command does, without interpreter teardown
        code = fedsilo_child(args.child, args.rounds, args.child_out)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    console = Console(width=None if sys.stdout.isatty() else 140)
    if "flower" in args.systems and not args.flower_python.is_file():
        console.print(
            f"[red]error:[/] no {args.flower_python}; set it up as the docstring of {__file__} says"
        )
        return 2
    started = datetime.now(UTC)
    rows: list[Row] = []
    for system in args.systems:
        with console.status(f"running {system} ({args.rounds} rounds)"):
            if system == "flower":
                row = run_flower(args.flower_python, args.rounds, args.client_cpus, args.keep_logs)
            else:
                row = run_fedsilo(system.removeprefix("fedsilo-"), args.rounds, args.keep_logs)
        rows.append(row)
        status = f"{row.wall_s:.1f}s" if row.ok else f"[red]failed[/]: {row.error}"
        console.print(f"{row.label}: {status}", highlight=False)
    console.print(table(rows, args.rounds))
    for row in rows:
        if row.versions:
            versions = ", ".join(f"{k} {v}" for k, v in row.versions.items())
            console.print(f"  {row.label}: {versions}", highlight=False)
    if args.json:
        meta = {
            "started": started.isoformat(),
            "rounds": args.rounds,
            "cpu_count": os.cpu_count(),
            "python": sys.version.split()[0],
        }
        args.json.write_text(json.dumps({**meta, "rows": [asdict(r) for r in rows]}, indent=2))
        console.print(f"rows written to {args.json}")
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

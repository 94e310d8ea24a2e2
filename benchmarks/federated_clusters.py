"""Federated clusters against a shared cluster: the gateway's overhead, side by side in one run.

The four hospitals of the bundled example either as silo actors in the coordinator's Ray
(shared cluster) or each as a site: its own `fedsilo site serve` process and Ray instance on
this machine, connected out to the coordinator's gateway over mutual TLS (federated
clusters). Same pipeline, packed HE with secure aggregation (the defaults), same rounds;
per model: the bundled logistic model (23 parameters) and an MLP of about 10^6.

    .venv/bin/python benchmarks/federated_clusters.py --json docs/results/federated_clusters.json
    .venv/bin/python benchmarks/federated_clusters.py --models logistic --rounds 3   # quicker

Round time is the mean over rounds 2.. (round 1 warms up), the median of --repeat runs per
mode, the modes alternating; payload bytes are the orchestrator's
accounting of updates up and models down per round; wire bytes are what the gateway sent and
received per round, TLS records aside (framing and envelopes included; set-up included, spread
over the rounds).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import ray
from rich.console import Console
from rich.table import Table

from pipelines.federated import local as local_sites
from pipelines.runner import RunOptions, run_federation
from pipelines.spec import load_pipeline

HOSPITALS = list(local_sites.FILES)
MODELS = {
    "logistic": "",  # the bundled example's
    "mlp-1e6": 'kind = "mlp"\nhidden = [990, 990]',  # 1,004,851 parameters on these columns
}


def pipeline(folder: Path, port: int, certs: Path, model: str, remote: list[str], rounds: int) -> Path:
    path = local_sites.pipeline_file(folder, port, certs, remote, rounds=rounds)
    if MODELS[model]:
        path.write_text(path.read_text().replace('kind = "logistic"', MODELS[model]))
    return path


def measure(path: Path) -> dict[str, Any]:
    summary = run_federation(load_pipeline(path), RunOptions(), Console(file=io.StringIO())).to_dict()
    rounds = summary["per_round"]
    steady = rounds[1:] or rounds
    wire = [
        (s.get("wire_bytes_to_site", 0), s.get("wire_bytes_from_site", 0))
        for s in summary["per_silo"].values()
    ]
    n = len(rounds)
    return {
        "parameters": summary["model_parameters"],
        "round_s": statistics.mean(r["seconds"] for r in steady),
        "setup_s": summary["setup_seconds"],
        "payload_up_per_round": statistics.mean(r["bytes_up"] for r in rounds),
        "payload_down_per_round": statistics.mean(r["bytes_down"] for r in rounds),
        "wire_to_sites_per_round": sum(w[0] for w in wire) / n,
        "wire_from_sites_per_round": sum(w[1] for w in wire) / n,
        "accuracy": summary["final"]["global_val_accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3, help="runs per mode; the median round time is shown")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    console = Console(width=150)
    folder = Path(tempfile.mkdtemp(prefix="fedsilo-sites-"))
    port = local_sites.free_port()
    certs = local_sites.certificates(folder / "certs", ["coordinator", *HOSPITALS])
    sites = [
        local_sites.Site(local_sites.site_file(folder / "sites", h, port, certs)).start() for h in HOSPITALS
    ]
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")  # fmt: skip
    rows: list[dict[str, Any]] = []
    try:
        for model in args.models:
            runs: dict[str, list[dict[str, Any]]] = {"shared cluster": [], "federated clusters": []}
            for repeat in range(args.repeat):  # alternate the modes: the machine's load drifts
                for mode, remote in (("shared cluster", []), ("federated clusters", HOSPITALS)):
                    run_folder = folder / f"{model}-{len(remote)}-{repeat}"
                    run_folder.mkdir()
                    with console.status(
                        f"{model}, {mode}, {args.rounds} rounds ({repeat + 1}/{args.repeat})"
                    ):
                        runs[mode].append(
                            measure(pipeline(run_folder, port, certs, model, remote, args.rounds))
                        )
                    console.print(
                        f"{model:9} {mode:18} {runs[mode][-1]['round_s']:.3f} s/round", highlight=False
                    )
            for mode, measured in runs.items():
                row = {"model": model, "mode": mode, "rounds": args.rounds, "repeats": args.repeat,
                       **measured[0]}  # fmt: skip
                times = sorted(m["round_s"] for m in measured)
                row.update(round_s=statistics.median(times), round_s_min=times[0], round_s_max=times[-1])
                rows.append(row)
            if args.json:
                args.json.write_text(json.dumps(rows, indent=2))
    finally:
        ray.shutdown()
        for site in sites:
            site.stop()
    setting = f"4 hospitals, packed HE + secure aggregation, {args.rounds} rounds"
    table = Table(title=f"Federated clusters vs a shared cluster ({setting})")

    columns = ("model", "params", "mode", "round s: median (range)", "set-up s", "payload up/round",
               "payload down/round", "wire to sites/round", "wire from sites/round", "accuracy")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in ("model", "mode") else "right")
    for r in rows:
        table.add_row(
            r["model"], f"{r['parameters']:,}", r["mode"],
            f"{r['round_s']:.3f} ({r['round_s_min']:.3f}-{r['round_s_max']:.3f})", f"{r['setup_s']:.1f}",
            mb(r["payload_up_per_round"]), mb(r["payload_down_per_round"]),
            mb(r["wire_to_sites_per_round"]), mb(r["wire_from_sites_per_round"]), f"{r['accuracy']:.3f}",
        )  # fmt: skip
    console.print(table)


def mb(n: float) -> str:
    return f"{n / 1e6:.3f} MB" if n else "-"


if __name__ == "__main__":
    main()

"""The operations commands of ``fedsilo``: schedules, KubeRay export, Ray job submission.

fedsilo schedule PIPELINE [--rounds N] [--max-runs N]      # local scheduler on [schedule] cron
fedsilo export kuberay PIPELINE [-o FILE] [--image IMAGE] [--kind raycronjob|rayjob]
fedsilo submit PIPELINE --address http://HEAD:8265 [--rounds N] [--no-wait]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from rich.console import Console

from pipelines.spec import load_pipeline

JOB_FAILED = 1


def add_commands(commands: Any) -> None:
    """Register the subcommands on the main parser's subparsers."""
    schedule = commands.add_parser("schedule", help="run a pipeline on its [schedule] cron, locally")
    schedule.add_argument("pipeline", type=Path)
    schedule.add_argument("--rounds", type=int, help="override the pipeline's number of rounds")
    schedule.add_argument("--address", help="run each federation on this Ray cluster")
    schedule.add_argument("--max-runs", type=int, help="stop after this many runs (default: never)")

    export = commands.add_parser("export", help="write deployment manifests")
    targets = export.add_subparsers(dest="export_target", required=True)
    kuberay = targets.add_parser("kuberay", help="a KubeRay RayCronJob (or scheduled RayJob) manifest")
    kuberay.add_argument("pipeline", type=Path)
    kuberay.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    kuberay.add_argument("--image", default="fedsilo:0.1.0", help="container image with fedsilo installed")
    kuberay.add_argument("--kind", choices=["raycronjob", "rayjob"], default="raycronjob")
    kuberay.add_argument("--namespace", help="Kubernetes namespace of the resources")

    submit = commands.add_parser("submit", help="run a pipeline as a Ray job on a cluster")
    submit.add_argument("pipeline", type=Path)
    submit.add_argument("--address", required=True, help="the head's dashboard, e.g. http://HEAD:8265")
    submit.add_argument("--rounds", type=int, help="override the pipeline's number of rounds")
    submit.add_argument("--no-wait", action="store_true", help="return once submitted")


def run_command(args: argparse.Namespace, console: Console) -> int | None:
    """Run an operations command; None when ``args`` is not one of them."""
    if args.command == "export":
        from pipelines import kuberay

        loaded = load_pipeline(args.pipeline)
        documents = kuberay.manifests(loaded, args.image, args.kind, args.namespace)
        text = kuberay.to_yaml(documents, kuberay.header(loaded, args.kind))
        if args.output:
            args.output.write_text(text)
            console.print(f"wrote {args.output}; apply it with kubectl apply -f {args.output}")
        else:
            print(text, end="")
        return 0
    if args.command == "schedule":
        from pipelines.schedule import Scheduler, federation_launcher

        logging.getLogger("pipelines.schedule").setLevel(logging.INFO)
        loaded = load_pipeline(args.pipeline)
        scheduler = Scheduler(loaded, federation_launcher(args.rounds, args.address))
        sched = scheduler.schedule
        console.print(
            f"scheduling [cyan]{loaded.spec.name}[/] on '{sched.cron}' ({sched.timezone}); "
            f"state and run log in {scheduler.state_path.parent}; Ctrl-C to stop"
        )
        outcomes = scheduler.serve(args.max_runs)
        return 0 if all(o.status != "failed" for o in outcomes) else JOB_FAILED
    if args.command == "submit":
        from pipelines.submit import submit

        loaded = load_pipeline(args.pipeline)
        outcome = submit(loaded, args.address, args.rounds, wait=not args.no_wait)
        console.print(f"Ray job {outcome.job_id}: {outcome.status} {outcome.message}".rstrip(), markup=False)
        return JOB_FAILED if outcome.status in ("FAILED", "STOPPED") else 0
    return None

"""The model-lifecycle commands of ``fedsilo``: evaluate, promote, review.

fedsilo evaluate PIPELINE --model models:/NAME@challenger --against models:/NAME@champion [--metric accuracy]
fedsilo promote NAME VERSION [--margin 0.02] [--force --reason "..."] [--tracking-uri URI]
fedsilo review NAME [--json] [--tracking-uri URI]

Exit codes: 0 done (evaluate: the gate passes), 1 the gate fails / promotion refused / the
registry is unreachable, 2 bad input (a model, alias or version that does not exist).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console

from pipelines.gate import DEFAULT_MARGIN, DEFAULT_METRIC, METRICS
from pipelines.ray_auth import prepare_ray_auth
from pipelines.registry import RegistryError, default_tracking_uri
from pipelines.spec import load_pipeline
from pipelines.tracking import resolve_tracking_uri

COMMANDS = ("evaluate", "promote", "review")


def add_commands(commands: Any) -> None:
    """Add the subcommands to ``fedsilo``'s subparsers."""
    evaluate = commands.add_parser(
        "evaluate", help="score two registered models on every silo's held-out rows"
    )
    evaluate.add_argument("pipeline", help="the pipeline whose silos score the models")
    evaluate.add_argument("--model", required=True, help="the challenger, e.g. models:/NAME@challenger")
    evaluate.add_argument("--against", required=True, help="the champion, e.g. models:/NAME@champion")
    evaluate.add_argument(
        "--metric",
        default=DEFAULT_METRIC,
        help=f"the gate's metric: {', '.join(METRICS)} (tables), or a figure a task's finalize gives",
    )  # fmt: skip
    evaluate.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                          help=f"how much worse a single silo may be (default {DEFAULT_MARGIN})")  # fmt: skip
    evaluate.add_argument("--json", action="store_true", help="print the gate as JSON")
    evaluate.add_argument("--address", help="join an existing Ray cluster (the silos' nodes)")

    promote = commands.add_parser("promote", help="move @champion to a version that passed the gate")
    promote.add_argument("name")
    promote.add_argument("version")
    promote.add_argument("--margin", type=float, help="re-decide the stored gate with this per-silo margin")
    promote.add_argument("--force", action="store_true", help="promote even if the gate refuses")
    promote.add_argument("--reason", help="why the gate is overridden (required with --force; recorded)")
    promote.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, else sqlite:///mlruns.db")

    review = commands.add_parser("review", help="a registered model's versions, aliases, metrics, lineage")
    review.add_argument("name")
    review.add_argument("--json", action="store_true", help="print JSON instead of a table")
    review.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, else sqlite:///mlruns.db")


def _uri(args: argparse.Namespace) -> str:
    return resolve_tracking_uri(args.tracking_uri) if args.tracking_uri else default_tracking_uri()


def run_command(args: argparse.Namespace, console: Console, err_console: Console) -> int:
    """Run one lifecycle command; errors a user must act on become messages and exit codes."""
    from pipelines.promote import PromotionRefused, outcome_table, promote

    try:
        if args.command == "evaluate":
            from pipelines.evaluate import evaluate_models, report

            if args.address:
                prepare_ray_auth()
            quiet = Console(stderr=True) if args.json else console
            loaded = load_pipeline(args.pipeline)
            result = evaluate_models(
                loaded, args.model, args.against, args.metric, args.margin, quiet, args.address
            )

            if args.json:
                print(json.dumps(report(result), indent=2))
            return 0 if result.decision().passed else 1
        if args.command == "promote":
            outcome = promote(_uri(args), args.name, args.version, args.margin, args.force, args.reason)
            console.print(outcome_table(outcome))
            return 0
        from pipelines.review import review, review_table

        rows = review(_uri(args), args.name)
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            console.print(review_table(args.name, rows))
        return 0
    except PromotionRefused as err:
        console.print(outcome_table(err.outcome))
        err_console.print(f"[red]not promoted:[/] {err}", highlight=False)
        return 1
    except RegistryError as err:
        err_console.print(f"[red]error:[/] {err}", highlight=False)
        return err.exit_code

"""The site commands of ``fedsilo``: what one organization runs on its own machine.

fedsilo site serve --site SITE.toml [--address RAY_ADDRESS]
fedsilo site audit --site SITE.toml [--run RUN_ID] [--json]

``serve`` starts (or joins) the site's own Ray, creates its silo and connects out to the
coordinator; ``audit`` shows the privacy officer every request the site was asked to serve.
Exit codes: 0 done (also: no audit log yet), 2 a SITE.toml to fix.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from pipelines.ray_auth import prepare_ray_auth
from pipelines.spec import LoadedPipeline
from sites.audit import audit_table, read_audit
from sites.config import SiteError, load_site


def add_parser(commands: Any) -> None:
    """Add ``site`` and its sub-commands to ``fedsilo``'s subparsers."""
    site = commands.add_parser("site", help="serve this organization's silo to a federation; audit it")
    site_commands = site.add_subparsers(dest="site_command", required=True)
    serve_parser = site_commands.add_parser("serve", help="serve the silo to the coordinator (connects out)")
    serve_parser.add_argument(
        "--site", type=Path, required=True, metavar="SITE.toml", help="this site's file"
    )
    serve_parser.add_argument(
        "--address",
        metavar="RAY_ADDRESS",
        help="join this Ray cluster (default: [site] ray_address, else a local one)",
    )
    audit_parser = site_commands.add_parser("audit", help="every request the site was asked to serve")
    audit_parser.add_argument(
        "--site", type=Path, required=True, metavar="SITE.toml", help="this site's file"
    )
    audit_parser.add_argument(
        "--run", metavar="RUN_ID", help="only this run's requests (a run id or its first characters)"
    )
    audit_parser.add_argument("--json", action="store_true", help="print the entries as JSON lines")


def serve(args: argparse.Namespace, err_console: Console) -> int:
    """Serve until interrupted (SIGINT or SIGTERM): the site's Ray is shut down on the way out."""
    try:
        site = load_site(args.site)
    except SiteError as err:
        err_console.print(str(err), markup=False, highlight=False)
        return 2
    if args.address or site.config.site.ray_address:
        prepare_ray_auth()  # the site's own cluster may require its token
    from sites.serve import serve as serve_site

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # unwinds through ray.shutdown()
    serve_site(site, args.address)
    return 0


def ask(loaded: LoadedPipeline, console: Console) -> int:
    """`fedsilo validate PIPELINE --against-sites`: each remote site's answer; 1 if one refuses."""
    import ray

    from pipelines.federated.coordinator import ask_sites
    from pipelines.federation import start_ray

    started = start_ray(loaded.spec.name, None, log_to_driver=False)
    try:
        with console.status("asking the sites (they connect to this command's gateway)"):
            answers = ask_sites(loaded, ray.get_runtime_context().namespace)
    finally:
        if started:
            ray.shutdown()
    table = Table(title="Sites: would they accept this run?")
    for column in ("site", "answer", "rule", "why"):
        table.add_column(column)
    for a in answers:
        answer = "accepts" if a.accepted else ("refuses" if a.kind == "refused" else a.kind)
        table.add_row(a.site, answer, a.rule, a.message)
    console.print(table)
    return 0 if all(a.accepted for a in answers) else 1


def audit(args: argparse.Namespace, console: Console, err_console: Console) -> int:
    try:
        site = load_site(args.site, check_files=False)  # the log outlives the data and keys
    except SiteError as err:
        err_console.print(str(err), markup=False, highlight=False)
        return 2
    path = site.audit_path
    if not path.exists():
        console.print(f"no audit log at {path}: this site has served no request yet", markup=False)
        return 0
    entries = read_audit(path)
    if args.json:
        for entry in entries:
            if args.run is None or entry.run_id.startswith(args.run):
                console.out(entry.to_json(), highlight=False)
        return 0
    console.print(audit_table(entries, args.run))
    return 0


def main(args: argparse.Namespace, console: Console | None = None, err_console: Console | None = None) -> int:
    """Run ``fedsilo site SUBCOMMAND``; returns the exit code."""
    console = console or Console()
    err_console = err_console or Console(stderr=True, soft_wrap=True)  # whole lines, to copy
    if args.site_command == "audit":
        return audit(args, console, err_console)
    if args.site_command == "serve":
        return serve(args, err_console)
    raise ValueError(f"unknown site command {args.site_command!r}")

"""What a person sees: a progress bar per round and a summary table at the end."""

from __future__ import annotations

import math

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestrator.records import SetupReport
from pipelines.report import RunSummary


def round_progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def setup_table(report: SetupReport) -> Table:
    notes = {d.name: "; ".join(_short(w) for w in d.warnings) for d in report.descriptions}
    table = Table(title="Silos", title_justify="left")
    columns = ["silo", "rows", "train", "validation", "missing cells", "device"]
    for column in columns + (["warning"] if any(notes.values()) else []):
        table.add_column(column, justify="right" if column in columns[1:5] else "left")
    for description, ready in zip(report.descriptions, report.ready, strict=True):
        cells = [
            description.name,
            str(description.rows),
            str(ready.train_rows),
            str(ready.val_rows),
            str(sum(description.missing.values())) if report.schema is not None else "-",
            ready.device,
        ]
        table.add_row(*cells, *([f"[yellow]{notes[description.name]}"] if any(notes.values()) else []))
    return table


def _short(warning: str) -> str:
    """A warning without the "silo 'x': " the row already says."""
    return warning.split(": ", 1)[1] if warning.startswith("silo ") else warning


def figure(value: float | None, digits: int) -> str:
    """A figure for a table: NaN when undefined, "-" when not computed."""
    if value is None:
        return "-"
    return "NaN" if math.isnan(value) else f"{value:.{digits}f}"


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


FIRST = ("accuracy", "loss", "auc")  # the built-in tables' figures, in the order the table has shown them


def figure_names(summary: RunSummary) -> list[str]:
    """The figures the summary has, the tables' usual ones first."""
    names = list(summary.final.get("metrics", {})) or ["accuracy", "loss"]
    return [n for n in FIRST if n in names] + [n for n in names if n not in FIRST]


def summary_table(summary: RunSummary) -> Table:
    table = Table(title=f"Federation {summary.experiment}: run {summary.run_id}", title_justify="left")
    names = figure_names(summary)
    table.add_column("silo")
    table.add_column("val rows", justify="right")
    for name in names:
        table.add_column("val AUC" if name == "auc" else f"val {name.replace('_', ' ')}", justify="right")
    for silo, row in summary.per_silo.items():
        cells = [figure(row.get(f"val_{name}"), 4 if name == "loss" else 3) for name in names]
        table.add_row(silo, str(row.get("val_rows", 0)), *cells)
    final = summary.final.get("metrics", {})
    table.add_section()
    cells = [figure(final.get(name), 4 if name == "loss" else 3) for name in names]
    table.add_row(
        "[bold]global", str(sum(r.get("val_rows", 0) for r in summary.per_silo.values())),
        f"[bold]{cells[0]}", *cells[1:],
    )  # fmt: skip
    rounds = summary.per_round
    if rounds:
        per_round = sum(r["seconds"] for r in rounds) / len(rounds)
        up = sum(r["bytes_up"] for r in rounds) / len(rounds)
        table.caption = (
            f"{summary.rounds_completed} rounds, {per_round:.2f} s/round, {_bytes(up)} up/round, "
            f"HE {summary.he}, {summary.model_parameters} parameters, {summary.wall_seconds:.1f} s in all"
        )
    return table


def undefined_notes(summary: RunSummary) -> list[str]:
    """Why a figure of the summary table is NaN: one line per silo and figure."""
    return [
        f"NaN: silo {name}'s {metric} is undefined ({why})"
        for name, row in summary.per_silo.items()
        for metric, why in row.get("undefined", {}).items()
    ]

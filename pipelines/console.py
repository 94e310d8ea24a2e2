"""What a person sees: a progress bar per round and a summary table at the end."""

from __future__ import annotations

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
    table = Table(title="Silos", title_justify="left")
    for column in ("silo", "rows", "train", "validation", "missing cells", "device"):
        table.add_column(column, justify="left" if column in ("silo", "device") else "right")
    for description, ready in zip(report.descriptions, report.ready, strict=True):
        table.add_row(
            description.name,
            str(description.rows),
            str(ready.train_rows),
            str(ready.val_rows),
            str(sum(description.missing.values())),
            ready.device,
        )
    return table


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def summary_table(summary: RunSummary) -> Table:
    table = Table(title=f"Federation {summary.experiment}: run {summary.run_id}", title_justify="left")
    table.add_column("silo")
    table.add_column("val rows", justify="right")
    table.add_column("val accuracy", justify="right")
    table.add_column("val loss", justify="right")
    for name, row in summary.per_silo.items():
        table.add_row(name, str(row["val_rows"]), f"{row['val_accuracy']:.3f}", f"{row['val_loss']:.4f}")
    final = summary.final
    auc = final.get("global_val_auc")
    table.add_section()
    table.add_row(
        "[bold]global",
        str(sum(r["val_rows"] for r in summary.per_silo.values())),
        f"[bold]{final['global_val_accuracy']:.3f}",
        f"{final['global_val_loss']:.4f}" + (f"  (AUC {auc:.3f})" if auc is not None else ""),
    )
    rounds = summary.per_round
    if rounds:
        per_round = sum(r["seconds"] for r in rounds) / len(rounds)
        up = sum(r["bytes_up"] for r in rounds) / len(rounds)
        table.caption = (
            f"{summary.rounds_completed} rounds, {per_round:.2f} s/round, {_bytes(up)} up/round, "
            f"HE {summary.he}, {summary.model_parameters} parameters, {summary.wall_seconds:.1f} s in all"
        )
    return table

"""``fedsilo evaluate``: every silo scores two registered models on its own held-out rows.

    fedsilo evaluate pipelines/examples/heart_disease/pipeline.toml \\
        --model models:/heart-disease-classifier@challenger \\
        --against models:/heart-disease-classifier@champion

The silos of the pipeline start on their nodes, load both versions there and score them
on the validation rows of the training split (`silo.registered.validation_rows`); only
sums come back. The per-silo table is printed, logged to MLflow (a run named "evaluate
..." in the pipeline's experiment: gate.json, gate.md, metrics per silo) and summarized
as ``fedsilo.gate.*`` tags on the challenger version, which `fedsilo promote` reads.
"""

from __future__ import annotations

import logging
import math
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ray
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orchestrator.actor import failure_reason
from pipelines import build, federation
from pipelines.gate import GateResult, compare, figure_names, table_rows, to_tags
from pipelines.registry import Registry, RegistryError
from pipelines.spec import LoadedPipeline
from pipelines.tracking import resolve_tracking_uri

logger = logging.getLogger(__name__)

SCORE_TIMEOUT_S = 300.0


def _score_on_silos(loaded: LoadedPipeline, uris: tuple[str, str], tracking_uri: str) -> dict[str, Any]:
    """silo -> (challenger's, champion's) Evaluation, or why that silo has none."""
    with tempfile.TemporaryDirectory() as tmp:
        actors = federation.Federation(
            loaded, f"evaluate-{uuid.uuid4().hex[:8]}", Path(tmp), resume=False, orchestrate=False
        )
        try:
            described = {name: h.describe.remote() for name, h in actors.silos.items()}
            out: dict[str, Any] = {}
            refs = {}
            for name, ref in described.items():
                try:
                    description = ray.get(ref, timeout=SCORE_TIMEOUT_S)
                except (ray.exceptions.RayError, TimeoutError) as err:
                    out[name] = failure_reason(err)
                    continue
                if description.errors:
                    out[name] = "; ".join(description.errors)
                    continue
                refs[name] = actors.silos[name].score_models.remote(uris, tracking_uri)
            for name, ref in refs.items():
                try:
                    scores = ray.get(ref, timeout=SCORE_TIMEOUT_S)
                    out[name] = (scores[uris[0]], scores[uris[1]])
                except (ray.exceptions.RayError, TimeoutError) as err:
                    out[name] = failure_reason(err)
            return {name: out[name] for name in actors.silos}
        finally:
            actors.stop()


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else "NaN" if math.isnan(v) else f"{v:.{digits}f}"


def _delta_text(row: dict[str, Any], digits: int) -> str:
    d = row["delta"]
    if isinstance(d, float):
        return f"{d:+.{digits}f}"
    return "undefined" if row.get("undefined") else str(row["error"] or "-")


def _label(name: str) -> str:
    return {"accuracy": "acc", "auc": "AUC"}.get(name, name.replace("_", " "))


def gate_table(result: GateResult) -> Table:
    decision = result.decision()
    verdict = "[green]passes" if decision.passed else "[red]fails"
    table = Table(
        title=f"{result.name}: version {result.challenger_version} (challenger) vs "
        f"{result.champion_version} (champion), gate on {result.metric}, margin {result.margin:g}: {verdict}",
        title_justify="left",
    )
    names = figure_names(result)
    columns = ["silo", "rows"] + [f"{_label(n)} {side}" for n in names for side in ("chall.", "champ.")]
    for column in [*columns, f"Δ {result.metric}"]:
        table.add_column(column, justify="left" if column == "silo" else "right")
    rows = table_rows(result)
    for i, row in enumerate(rows):
        if i == len(rows) - 1:
            table.add_section()
        ch, cp = row["challenger"], row["champion"]
        assert isinstance(ch, dict) and isinstance(cp, dict)
        d = row["delta"]
        worse = not isinstance(d, float) or d < -result.margin
        mark = "[yellow]" if row.get("undefined") else "[red]" if worse else ""
        cells = [_fmt(side[n], 4 if n == "loss" else 3) for n in names for side in (ch, cp)]
        table.add_row(str(row["silo"]), str(row["rows"]), *cells, mark + escape(_delta_text(row, 4)))
    why = [] if decision.passed else ["why: " + "; ".join(decision.reasons)]
    table.caption = "\n".join(why + list(decision.notes)) or None
    return table


def gate_markdown(result: GateResult) -> str:
    names = figure_names(result)
    header = " | ".join(f"{_label(n)} ({side})" for n in names for side in ("chall.", "champ."))
    lines = [
        f"# Gate: {result.name} version {result.challenger_version} vs {result.champion_version}",
        "",
        f"metric {result.metric}, margin {result.margin:g}: "
        + ("passes" if result.decision().passed else "fails: " + "; ".join(result.decision().reasons)),
        "",
        f"| silo | rows | {header} | delta {result.metric} |",
        "|---|---|" + "---|" * (2 * len(names)) + "---|",
    ]
    for row in table_rows(result):
        ch, cp = row["challenger"], row["champion"]
        assert isinstance(ch, dict) and isinstance(cp, dict)
        text = " | ".join(_fmt(side[n], 4) for n in names for side in (ch, cp))
        lines.append(f"| {row['silo']} | {row['rows']} | {text} | {_delta_text(row, 4)} |")
    notes = result.decision().notes
    return "\n".join(lines + ([""] + [f"- {note}" for note in notes] if notes else [])) + "\n"


def _log(loaded: LoadedPipeline, tracking_uri: str, result: GateResult, registry: Registry) -> str:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(loaded.spec.experiment)
    name = f"evaluate {result.name} v{result.challenger_version} vs v{result.champion_version}"
    decision = result.decision()
    with mlflow.start_run(run_name=name) as run:
        mlflow.log_params({"challenger": f"models:/{result.name}/{result.challenger_version}",
                           "champion": f"models:/{result.name}/{result.champion_version}",
                           "metric": result.metric, "margin": result.margin})  # fmt: skip
        metrics: dict[str, float] = {}
        for row in table_rows(result):
            for side in ("challenger", "champion"):
                values = row[side]
                assert isinstance(values, dict)
                metrics.update(  # an undefined (NaN) figure is not logged as a number
                    {f"gate/{row['silo']}/{side}_{k}": v for k, v in values.items()
                     if v is not None and math.isfinite(v)}
                )  # fmt: skip
            if isinstance(row["delta"], float):
                metrics[f"gate/{row['silo']}/delta"] = row["delta"]
        mlflow.log_metrics(metrics)
        mlflow.set_tags({"fedsilo.gate.passed": str(decision.passed).lower(), "fedsilo.kind": "evaluate"})
        mlflow.log_dict(report(result), "gate.json")
        mlflow.log_text(gate_markdown(result), "gate.md")
        run_id: str = run.info.run_id
    at = datetime.now(UTC).isoformat(timespec="seconds")
    registry.set_tags(result.name, result.challenger_version, to_tags(result, run_id, at))
    return run_id


def evaluate_models(
    loaded: LoadedPipeline,
    model: str,
    against: str,
    metric: str,
    margin: float,
    console: Console,
    address: str | None = None,
) -> GateResult:
    """``address``: join that Ray cluster (silos on their organizations' nodes); None: a local Ray."""
    tracking_uri = resolve_tracking_uri(loaded.spec.tracking.mlflow_uri)
    registry = Registry(tracking_uri)
    challenger, champion = registry.resolve(model), registry.resolve(against)
    if challenger.name != champion.name:
        raise RegistryError(f"--model {model} and --against {against} are versions of different models")
    console.print(
        f"scoring {challenger.describe()} against {champion.describe()} on every silo's held-out rows"
    )
    started = federation.start_ray(loaded.spec.name, address, False)
    try:
        scores = _score_on_silos(loaded, (challenger.uri, champion.uri), tracking_uri)
    finally:
        if started:
            ray.shutdown()
    task = build.task_spec(loaded)
    finalize = task.load().finalize if task is not None else None
    result = compare(
        challenger.name, (challenger.version, champion.version), scores, metric, margin, finalize
    )
    known = set(result.challenger.metrics)
    if known and metric not in known:
        raise RegistryError(f"--metric {metric}: the models' figures are {', '.join(sorted(known))}", 2)
    run_id = _log(loaded, tracking_uri, result, registry)
    console.print(gate_table(result))
    console.print(
        f"logged as MLflow run {run_id}; tagged {result.name} version {result.challenger_version} "
        f"with the result (fedsilo.gate.*)"
    )
    return result


def report(result: GateResult) -> dict[str, Any]:
    """The gate as JSON: gate.json in the evaluate run, and ``fedsilo evaluate --json``."""
    decision = result.decision()
    return {
        "name": result.name,
        "challenger_version": result.challenger_version,
        "champion_version": result.champion_version,
        "metric": result.metric,
        "margin": result.margin,
        "passed": decision.passed,
        "reasons": list(decision.reasons),
        "notes": list(decision.notes),
        "silos": table_rows(result),
    }

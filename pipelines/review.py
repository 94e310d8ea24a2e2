"""``fedsilo review NAME``: a registered model's versions, for the person who promotes one.

    fedsilo review heart-disease-classifier                 # a table
    fedsilo review heart-disease-classifier --json          # the same, for machines
    fedsilo review heart-disease-classifier --tracking-uri http://mlflow:5000

Per version: aliases, date, the training run's final global validation accuracy and AUC,
privacy (HE scheme; DP epsilon when ``fedsilo.privacy.epsilon`` is tagged), contributing
silos, each silo's data version (hash prefix and rows; * where it changed since the
previous version), warm-start source, the gate result, who promoted it, and its model card.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.table import Table

from pipelines.gate import GateRecord
from pipelines.lineage import DATA_TAG, WARM_TAG
from pipelines.registry import Registry
from silo.fingerprint import DataVersion


def _run_facts(registry: Registry, run_id: str) -> dict[str, Any]:
    if not run_id:
        return {"val_accuracy": None, "val_auc": None, "model_card": None}
    try:
        run = registry.call(f"reading run {run_id}", lambda: registry.client.get_run(run_id))
        artifacts = {
            a.path for a in registry.call("listing artifacts", lambda: registry.client.list_artifacts(run_id))
        }
    except Exception:  # the training run was deleted
        return {"val_accuracy": None, "val_auc": None, "model_card": None}
    metrics = run.data.metrics
    card = f"runs:/{run_id}/model_card.md" if "model_card.md" in artifacts else None
    return {"val_accuracy": metrics.get("global/val_accuracy"), "val_auc": metrics.get("global/val_auc"),
            "model_card": card}  # fmt: skip


def review(tracking_uri: str, name: str) -> list[dict[str, Any]]:
    """Every version of ``name``, oldest first, as plain values (the ``--json`` output)."""
    registry = Registry(tracking_uri)
    aliases: dict[str, list[str]] = {}
    for alias, version in (registry.model(name).aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    rows: list[dict[str, Any]] = []
    previous: dict[str, dict[str, Any]] = {}
    for v in registry.versions(name):
        tags = dict(v.tags or {})
        data = {}
        for key, value in sorted(tags.items()):
            parsed = DataVersion.from_tag(value) if key.startswith(DATA_TAG) else None
            if parsed is not None:
                data[key.removeprefix(DATA_TAG)] = {"sha256": parsed.sha256, "rows": parsed.rows}
        gate = GateRecord.from_tags(tags)
        rows.append(
            {
                "version": str(v.version),
                "aliases": sorted(aliases.get(str(v.version), [])),
                "created": datetime.fromtimestamp(v.creation_timestamp / 1000, UTC).isoformat(
                    timespec="seconds"
                ),
                "run_id": v.run_id or "",
                **_run_facts(registry, v.run_id or ""),
                "he": tags.get("fedsilo.he"),
                "dp": tags.get("fedsilo.privacy.dp", tags.get("fedsilo.dp")),
                "epsilon": tags.get("fedsilo.privacy.epsilon"),
                "privacy": {k: val for k, val in tags.items() if k.startswith("fedsilo.privacy.")},
                "silos": [s for s in tags.get("fedsilo.silos", "").split(",") if s],
                "data": data,
                "data_changed": sorted(s for s in data if s in previous and previous[s] != data[s]),
                "warm_start": tags.get(WARM_TAG),
                "gate": None
                if gate is None
                else {
                    "against_version": gate.against_version,
                    "passed": gate.passed,
                    "metric": gate.metric,
                    "margin": gate.margin,
                    "aggregate_delta": gate.aggregate_delta,
                    "run_id": gate.run_id,
                },  # fmt: skip
                "promoted_by": tags.get("fedsilo.promoted_by"),
                "promoted_at": tags.get("fedsilo.promoted_at"),
                "forced": tags.get("fedsilo.forced") == "true",
                "force_reason": tags.get("fedsilo.force_reason"),
            }
        )
        previous = data or previous
    return rows


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def review_table(name: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=f"{name}: {len(rows)} versions", title_justify="left")
    for column in ("version", "aliases", "created", "accuracy", "AUC", "HE", "DP ε", "silos",
                   "data (sha256/rows)", "from", "gate", "promoted", "card"):  # fmt: skip
        table.add_column(column, justify="right" if column in ("version", "accuracy", "AUC") else "left")
    for r in rows:
        data = "\n".join(
            f"{s} {d['sha256'][:8]}/{d['rows']}{'*' if s in r['data_changed'] else ''}"
            for s, d in r["data"].items()
        )
        gate = r["gate"]
        gate_text = "-"
        if gate is not None:
            colour = "green" if gate["passed"] else "red"
            delta = gate["aggregate_delta"]
            gate_text = (
                f"[{colour}]{'pass' if gate['passed'] else 'fail'}[/] vs v{gate['against_version']}"
                + (f" ({gate['metric']} {delta:+.3f})" if delta is not None else "")
            )
        promoted = "-"
        if r["promoted_by"]:
            promoted = f"{r['promoted_by']} {r['promoted_at'][:10]}" + (" [red]forced" if r["forced"] else "")
        table.add_row(
            r["version"], ",".join(f"@{a}" for a in r["aliases"]) or "-", r["created"][:16].replace("T", " "),
            _num(r["val_accuracy"]), _num(r["val_auc"]), r["he"] or "-", r["epsilon"] or "-",
            str(len(r["silos"])), data or "-", (r["warm_start"] or "cold").replace(f"models:/{name}", ""),
            gate_text, promoted, "yes" if r["model_card"] else "[red]missing",
        )  # fmt: skip
    table.caption = "data: * = changed since the previous version; card: model_card.md in the training run"
    return table

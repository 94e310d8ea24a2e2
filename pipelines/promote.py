"""``fedsilo promote NAME VERSION``: move @champion, only past the federated evaluation gate.

    fedsilo promote heart-disease-classifier 3                 # needs a passing gate vs the champion
    fedsilo promote heart-disease-classifier 3 --margin 0.05   # re-decide the stored gate, wider margin
    fedsilo promote heart-disease-classifier 3 --force --reason "hotfix for ticket 42"

The gate result is what `fedsilo evaluate` tagged on the version (``fedsilo.gate.*``); it
must be against the version that holds @champion now. The first promotion of a model (no
champion yet) needs no gate. Every decision, refusals included, is logged as an MLflow run
("promote NAME vX") in the experiment of the version's training run; a promotion also tags
the version with who, when, whether forced and why.
"""

from __future__ import annotations

import getpass
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from rich.table import Table

from pipelines.gate import GateRecord
from pipelines.registry import CHAMPION, Registry, RegistryError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    name: str
    version: str
    previous: str | None  # the champion before (None: there was none)
    promoted: bool
    forced: bool
    reasons: tuple[str, ...]  # why the gate refuses (a forced promotion keeps them, for the record)
    note: str
    user: str
    at: str


class PromotionRefused(Exception):
    def __init__(self, outcome: Outcome) -> None:
        super().__init__(
            f"{outcome.name} version {outcome.version} was not promoted: " + "; ".join(outcome.reasons)
        )
        self.outcome = outcome


def _gate_reasons(registry: Registry, target: Any, champion: Any, margin: float | None) -> tuple[str, ...]:
    name, version = target.name, str(target.version)
    gate = GateRecord.from_tags(target.tags or {})
    how = (
        f"run: fedsilo evaluate PIPELINE --model models:/{name}/{version} --against models:/{name}@{CHAMPION}"
    )
    if gate is None:
        return (
            f"version {version} has no evaluation against the champion (version {champion.version}); {how}",
        )
    if gate.against_version != str(champion.version):
        return (
            f"version {version} was evaluated against version {gate.against_version}, but the champion is "
            f"now version {champion.version}; {how}",
        )
    return gate.decision(margin).reasons


def _log_decision(registry: Registry, target: Any, outcome: Outcome) -> str:
    import mlflow

    mlflow.set_tracking_uri(registry.uri)
    experiment_id = None
    if target.run_id:
        try:
            experiment_id = registry.client.get_run(target.run_id).info.experiment_id
        except Exception:  # the training run was deleted: log beside the registry's other decisions
            experiment_id = None
    if experiment_id is None:
        experiment_id = mlflow.set_experiment(f"{outcome.name}-registry").experiment_id
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"promote {outcome.name} v{outcome.version}"
    ) as run:
        mlflow.set_tags({"fedsilo.kind": "promote", "fedsilo.promoted": str(outcome.promoted).lower(),
                         "fedsilo.forced": str(outcome.forced).lower()})  # fmt: skip
        decision: dict[str, Any] = asdict(outcome)
        gate = GateRecord.from_tags(target.tags or {})
        decision["gate"] = asdict(gate) if gate else None
        mlflow.log_dict(decision, "decision.json")
        run_id: str = run.info.run_id
    return run_id


def promote(
    tracking_uri: str,
    name: str,
    version: str,
    margin: float | None = None,
    force: bool = False,
    reason: str | None = None,
) -> Outcome:
    if force and not (reason and reason.strip()):
        raise RegistryError('--force needs --reason "...": say why the gate is overridden (it is recorded)')
    registry = Registry(tracking_uri)
    target = registry.version(name, version)
    champion = registry.by_alias(name, CHAMPION)
    user, at = getpass.getuser(), datetime.now(UTC).isoformat(timespec="seconds")
    previous = str(champion.version) if champion is not None else None

    def outcome(promoted: bool, reasons: tuple[str, ...], note: str) -> Outcome:
        return Outcome(name, version, previous, promoted, force and bool(reasons), reasons, note, user, at)

    if champion is not None and previous == version:
        return outcome(False, (), f"version {version} already holds @{CHAMPION}; nothing to do")
    if champion is None:
        reasons: tuple[str, ...] = ()
        note = f"first promotion: {name} has no @{CHAMPION} yet, so there is nothing to gate against"
    else:
        reasons = _gate_reasons(registry, target, champion, margin)
        note = f"passes the gate against version {previous}" if not reasons else "refused by the gate"
    if reasons and not force:
        result = outcome(False, reasons, note)
        _log_decision(registry, target, result)
        raise PromotionRefused(result)
    if reasons:
        note = f"forced past the gate by {user}: {reason}"
    result = outcome(True, reasons, note)
    registry.call(
        f"moving @{CHAMPION} to {name} version {version}",
        lambda: registry.client.set_registered_model_alias(name, CHAMPION, version),
    )
    tags = {
        "fedsilo.promoted_by": user,
        "fedsilo.promoted_at": at,
        "fedsilo.forced": str(result.forced).lower(),
        "fedsilo.previous_champion": previous or "none",
    }
    if result.forced:
        tags["fedsilo.force_reason"] = str(reason)
    registry.set_tags(name, version, tags)
    _log_decision(registry, target, result)
    return result


def outcome_table(outcome: Outcome) -> Table:
    verdict = "[green]promoted" if outcome.promoted else ("[red]refused" if outcome.reasons else "unchanged")
    table = Table(title=f"{outcome.name} version {outcome.version}: {verdict}", title_justify="left")
    table.add_column("")
    table.add_column("")
    table.add_row("champion before", f"version {outcome.previous}" if outcome.previous else "none")
    table.add_row("decision", outcome.note)
    for why in outcome.reasons:
        table.add_row("[red]gate" if not outcome.promoted else "gate (overridden)", why)
    table.add_row("by", f"{outcome.user} at {outcome.at}")
    return table

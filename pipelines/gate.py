"""The federated evaluation gate: challenger against champion, per silo and in aggregate.

Pure maths on the sums silos return (`Evaluation`); `pipelines/evaluate.py` collects them,
`pipelines/promote.py` applies the decision. The rule:

- aggregate: the challenger is not worse than the champion on the chosen metric over every
  silo's held-out rows together (delta >= 0, no tolerance);
- per silo: on no silo is it worse by more than ``margin`` (delta >= -margin);
- every silo must have scored both models (a silo that could not is a failed check);
- a silo whose rows leave the metric undefined (ROC AUC over a single class, any metric over
  no rows) neither passes nor fails its margin: the gate says so and decides on the others
  and the aggregate.

Deltas are signed so that positive means the challenger is better (loss: champion - challenger).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from orchestrator.metrics import Finalize, GlobalEval, combine
from silo.messages import Evaluation

METRICS = ("accuracy", "auc", "loss")  # the built-in tables' figures; a task's finalize names its own
LOWER_IS_BETTER = frozenset({"loss", "mse", "mae", "rmse"})
DEFAULT_METRIC = "accuracy"
DEFAULT_MARGIN = 0.02
TAG = "fedsilo.gate."
EPS = 1e-9  # float noise in differences of ratios is not "worse"


def value(result: GlobalEval, metric: str) -> float | None:
    """The metric, or None where it could not be computed (never NaN: NaN compares as passing)."""
    got = result.metrics.get(metric)
    return got if got is not None and math.isfinite(got) else None


def delta(metric: str, challenger: float | None, champion: float | None) -> float | None:
    """Positive: the challenger is better (lower is better for losses and errors)."""
    if challenger is None or champion is None:
        return None
    return champion - challenger if metric in LOWER_IS_BETTER else challenger - champion


@dataclass(frozen=True)
class SiloComparison:
    silo: str
    examples: int
    challenger: GlobalEval | None  # None: the silo could not score the models
    champion: GlobalEval | None
    delta: float | None
    error: str = ""
    undefined: str = ""  # why the silo's rows leave the metric undefined ("" when defined)


@dataclass(frozen=True)
class Decision:
    passed: bool
    reasons: tuple[str, ...]  # why it failed (empty when it passed)
    notes: tuple[str, ...] = ()  # silos left out of the per-silo check, and why


def decide(
    aggregate_delta: float | None,
    deltas: Mapping[str, float | None],
    missing: Sequence[str],
    margin: float,
    undefined: Mapping[str, str] | None = None,
) -> Decision:
    """``undefined``: silo -> why its rows leave the metric undefined; such a silo neither passes
    nor fails. Any other silo without a delta fails the gate."""
    undefined = undefined or {}
    reasons, notes = [], []
    if aggregate_delta is None:
        reasons.append("the aggregate metric could not be computed")
    elif aggregate_delta < -EPS:
        reasons.append(f"worse than the champion on the aggregate by {-aggregate_delta:.4f}")
    for silo, d in deltas.items():
        if silo in undefined:
            notes.append(
                f"silo {silo}: metric undefined ({undefined[silo]}): neither passes nor fails its margin"
            )
        elif d is None:
            reasons.append(f"silo {silo}: the metric could not be computed for one of the models")
        elif d < -margin - EPS:
            reasons.append(f"silo {silo}: worse by {-d:.4f}, more than the margin {margin:g}")
    reasons += [f"silo {silo}: did not score the models" for silo in missing]
    return Decision(not reasons, tuple(reasons), tuple(notes))


@dataclass(frozen=True)
class GateResult:
    name: str
    challenger_version: str
    champion_version: str
    metric: str
    margin: float
    challenger: GlobalEval
    champion: GlobalEval
    silos: tuple[SiloComparison, ...]

    @property
    def aggregate_delta(self) -> float | None:
        return delta(self.metric, value(self.challenger, self.metric), value(self.champion, self.metric))

    @property
    def missing(self) -> list[str]:
        return [s.silo for s in self.silos if s.challenger is None]

    @property
    def deltas(self) -> dict[str, float | None]:
        return {s.silo: s.delta for s in self.silos if s.challenger is not None}

    @property
    def undefined(self) -> dict[str, str]:
        return {s.silo: s.undefined for s in self.silos if s.undefined}

    def decision(self, margin: float | None = None) -> Decision:
        return decide(
            self.aggregate_delta, self.deltas, self.missing, self.margin if margin is None else margin,
            self.undefined,
        )  # fmt: skip


def compare(
    name: str,
    versions: tuple[str, str],
    scores: Mapping[str, tuple[Evaluation, Evaluation] | str],
    metric: str,
    margin: float,
    finalize: Finalize | None = None,
) -> GateResult:
    """``scores``: silo -> (challenger's, champion's) evaluation, or the reason it has none;
    ``finalize``: a task's (None: the tables' figures)."""
    rows, ours, theirs = [], [], []
    for silo, got in scores.items():
        if isinstance(got, str):
            rows.append(SiloComparison(silo, 0, None, None, None, got))
            continue
        mine, other = combine(0, [got[0]], finalize), combine(0, [got[1]], finalize)
        ours.append(got[0])
        theirs.append(got[1])
        d = delta(metric, value(mine, metric), value(other, metric))
        # Undefined by the rows (the same for both models), not by one model (a diverged NaN loss)
        ours_why, theirs_why = (r.per_silo[got[0].silo].undefined.get(metric, "") for r in (mine, other))
        why = ours_why if ours_why and theirs_why else ""
        rows.append(SiloComparison(silo, got[0].examples, mine, other, d, undefined=why))
    ours_all, theirs_all = combine(0, ours, finalize), combine(0, theirs, finalize)
    return GateResult(name, versions[0], versions[1], metric, margin, ours_all, theirs_all, tuple(rows))


def _metrics(result: GlobalEval | None, names: Sequence[str]) -> dict[str, float | None]:
    """``names``' figures (NaN where the rows leave one undefined; None where it is not computed)."""
    figures = result.metrics if result is not None else {}
    return {name: figures.get(name) for name in names}


def figure_names(result: GateResult) -> list[str]:
    """The figures to show: the tables' usual three (where present), then the task's others."""
    present = list(result.challenger.metrics) or list(METRICS)
    first = [n for n in METRICS if n in present] or [n for n in METRICS if n == result.metric]
    return first + [n for n in present if n not in first]


def table_rows(result: GateResult) -> list[dict[str, object]]:
    """One row per silo plus the aggregate: both models' metrics and the gate's delta."""
    names = figure_names(result)

    def row(silo: str, rows: int, ch: GlobalEval | None, champ: GlobalEval | None, d: float | None,
            error: str) -> dict[str, object]:  # fmt: skip
        figures = {"challenger": _metrics(ch, names), "champion": _metrics(champ, names)}
        return {"silo": silo, "rows": rows, **figures, "delta": d, "error": error}

    rows = [row(s.silo, s.examples, s.challenger, s.champion, s.delta, s.error) for s in result.silos]
    for table_row, s in zip(rows, result.silos, strict=True):
        table_row["undefined"] = s.undefined
    rows.append(row("aggregate", result.challenger.examples, result.challenger, result.champion,
                    result.aggregate_delta, ""))  # fmt: skip
    return rows


def to_tags(result: GateResult, run_id: str, at: str) -> dict[str, str]:
    """What promote needs, as tags on the challenger version (the table is in the run)."""
    decision = result.decision()
    return {
        f"{TAG}against_version": result.champion_version,
        f"{TAG}against": f"models:/{result.name}/{result.champion_version}",
        f"{TAG}metric": result.metric,
        f"{TAG}margin": repr(result.margin),
        f"{TAG}aggregate_delta": repr(result.aggregate_delta),
        f"{TAG}deltas": json.dumps(result.deltas, sort_keys=True),
        f"{TAG}missing": ",".join(result.missing) or "-",
        f"{TAG}undefined": json.dumps(result.undefined, sort_keys=True),
        f"{TAG}passed": str(decision.passed).lower(),
        f"{TAG}run_id": run_id,
        f"{TAG}at": at,
    }


@dataclass(frozen=True)
class GateRecord:
    """A gate result read back from a version's tags."""

    against_version: str
    metric: str
    margin: float
    aggregate_delta: float | None
    deltas: dict[str, float | None]
    missing: tuple[str, ...]
    passed: bool
    run_id: str
    undefined: dict[str, str] = field(default_factory=dict)  # silo -> why its metric is undefined

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> GateRecord | None:
        if f"{TAG}against_version" not in tags:
            return None
        aggregate = tags.get(f"{TAG}aggregate_delta", "None")
        return cls(
            against_version=tags[f"{TAG}against_version"],
            metric=tags.get(f"{TAG}metric", DEFAULT_METRIC),
            margin=float(tags.get(f"{TAG}margin", DEFAULT_MARGIN)),
            aggregate_delta=None if aggregate == "None" else float(aggregate),
            deltas=json.loads(tags.get(f"{TAG}deltas", "{}")),
            missing=tuple(s for s in tags.get(f"{TAG}missing", "-").split(",") if s and s != "-"),
            passed=tags.get(f"{TAG}passed") == "true",
            run_id=tags.get(f"{TAG}run_id", ""),
            undefined=json.loads(tags.get(f"{TAG}undefined", "{}")),
        )

    def decision(self, margin: float | None = None) -> Decision:
        return decide(
            self.aggregate_delta, self.deltas, self.missing, self.margin if margin is None else margin,
            self.undefined,
        )  # fmt: skip

"""Figures from the sums silos return: each silo's alone, and all silos' together.

Every figure is a task's ``finalize`` over summed sums (`Evaluation.as_sums`), so the global
figures weight every validation row equally and never average per-silo figures. A figure that
a silo's rows cannot define (any figure over no validation rows; ROC AUC over rows of a single
class; R² over a constant target) is NaN, with the reason in ``undefined``: reported as
undefined, never logged to MLflow as a number, and it never enters a global figure.

    python -c "from orchestrator.metrics import figures; from silo.messages import Evaluation; \
print(figures(Evaluation('clinic', 3, 1.2, 2, (0, 3), (0, 0))))"
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from silo.messages import Evaluation
from silo.sums import add_sums, auc_from_histograms, classification_finalize, why_undefined

__all__ = ["GlobalEval", "SiloScore", "add", "auc_from_histograms", "combine", "figures"]

NAN = float("nan")
Finalize = Callable[[Mapping[str, Any]], Mapping[str, float]]


class _Figures:
    """The built-in tables' figures by name, from a ``metrics`` dict (NaN where it has none)."""

    metrics: dict[str, float]

    @property
    def loss(self) -> float:
        return self.metrics.get("loss", NAN)

    @property
    def accuracy(self) -> float:
        return self.metrics.get("accuracy", NAN)


@dataclass(frozen=True)
class SiloScore(_Figures):
    examples: int
    metrics: dict[str, float]  # {figure: value}, NaN where undefined
    undefined: dict[str, str] = field(default_factory=dict)  # figure -> why it is undefined

    @property
    def auc(self) -> float | None:
        """ROC AUC where the task has one (NaN when undefined), None where it has none."""
        return self.metrics.get("auc")


@dataclass(frozen=True)
class GlobalEval(_Figures):
    after_round: int  # the global model produced by this round (0: the initial model)
    examples: int
    metrics: dict[str, float]  # finalize over every silo's sums together; NaN where undefined
    per_silo: dict[str, SiloScore]

    @property
    def auc(self) -> float | None:
        """None: not a figure of this task, or undefined over all silos' rows."""
        auc = self.metrics.get("auc")
        return None if auc is None or math.isnan(auc) else auc

    def mean_of_silos(self, metric: str = "accuracy") -> float | None:
        """The plain mean of the silos where ``metric`` is defined (None where it is nowhere)."""
        values = [v for s in self.per_silo.values() if math.isfinite(v := s.metrics.get(metric, NAN))]
        return sum(values) / len(values) if values else None


def add(evaluations: Sequence[Evaluation], silo: str = "all") -> Evaluation:
    """The evaluations' sums added: one `Evaluation` over all their rows."""
    sums = add_sums([(e.silo, e.as_sums()) for e in evaluations])
    return Evaluation(silo, sum(e.examples for e in evaluations), 0.0, 0, sums=sums)


def figures(total: Evaluation, finalize: Finalize | None = None) -> SiloScore:
    """``finalize`` (the built-in tables': loss, accuracy, AUC) over one evaluation's sums."""
    sums = total.as_sums()
    values = {name: float(v) for name, v in (finalize or classification_finalize)(sums).items()}
    undefined = {name: why_undefined(name, sums) for name, v in values.items() if math.isnan(v)}
    return SiloScore(total.examples, values, undefined)


def combine(
    after_round: int, evaluations: Sequence[Evaluation], finalize: Finalize | None = None
) -> GlobalEval:
    scored = [e for e in evaluations if e.examples > 0]  # a silo without validation rows adds nothing
    overall = figures(add(scored), finalize) if scored else SiloScore(0, {})
    per_silo = {e.silo: figures(e, finalize) if e.examples else _unscored(overall) for e in evaluations}
    return GlobalEval(after_round, overall.examples, overall.metrics, per_silo)


def _unscored(overall: SiloScore) -> SiloScore:
    """A silo without validation rows: every figure the others have, undefined."""
    return SiloScore(
        0, {name: NAN for name in overall.metrics}, dict.fromkeys(overall.metrics, "no validation rows")
    )


def undefined_figures(per_silo: Mapping[str, SiloScore]) -> dict[str, dict[str, str]]:
    """silo -> {figure: why it is undefined}, for the silos with any undefined figure."""
    return {name: dict(score.undefined) for name, score in per_silo.items() if score.undefined}

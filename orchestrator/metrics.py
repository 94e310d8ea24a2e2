"""Figures from the sums silos return: each silo's alone, and all silos' together.

Every figure is computed from summed `Evaluation`s, so the global figures weight every
validation row equally and never average per-silo figures. A figure that a silo's rows
cannot define (any figure over no validation rows; ROC AUC over rows of a single class) is
NaN, with the reason in ``undefined``: reported as undefined, never logged to MLflow as a
number, and it never enters a global figure.

    python -c "from orchestrator.metrics import figures; from silo.messages import Evaluation; \
print(figures(Evaluation('clinic', 3, 1.2, 2, (0, 3), (0, 0))))"
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from silo.messages import Evaluation
from silo.task_kinds import auc_from_histograms

NAN = float("nan")


@dataclass(frozen=True)
class SiloScore:
    examples: int
    loss: float  # NaN: no validation rows
    accuracy: float  # NaN: no validation rows
    auc: float | None = None  # binary targets only; NaN when the rows hold a single class
    undefined: dict[str, str] = field(default_factory=dict)  # figure -> why it is undefined

    @property
    def metrics(self) -> dict[str, float]:
        """{figure: value}, NaN where undefined (the figures a `finalize` of the sums gives)."""
        values = {"loss": self.loss, "accuracy": self.accuracy}
        if self.auc is not None:
            values["auc"] = self.auc
        return values


@dataclass(frozen=True)
class GlobalEval:
    after_round: int  # the global model produced by this round (0: the initial model)
    examples: int
    loss: float
    accuracy: float
    auc: float | None  # None: not a binary target, or undefined over all silos' rows
    per_silo: dict[str, SiloScore]

    @property
    def metrics(self) -> dict[str, float]:
        """{figure: value} over every silo's rows together; NaN where undefined."""
        values = {"loss": self.loss, "accuracy": self.accuracy}
        if self.auc is not None or any(s.auc is not None for s in self.per_silo.values()):
            values["auc"] = NAN if self.auc is None else self.auc
        return values

    def mean_of_silos(self, metric: str = "accuracy") -> float | None:
        """The plain mean of the silos where ``metric`` is defined (None where it is nowhere)."""
        values = [v for s in self.per_silo.values() if math.isfinite(v := s.metrics.get(metric, NAN))]
        return sum(values) / len(values) if values else None


def add(evaluations: Sequence[Evaluation], silo: str = "all") -> Evaluation:
    """The evaluations' sums added: one `Evaluation` over all their rows."""
    hists = [(e.positive_hist, e.negative_hist) for e in evaluations]
    binary = bool(evaluations) and all(p is not None and n is not None for p, n in hists)
    return Evaluation(
        silo,
        sum(e.examples for e in evaluations),
        sum(e.loss_sum for e in evaluations),
        sum(e.correct for e in evaluations),
        tuple(np.sum([np.asarray(p) for p, _ in hists], axis=0).tolist()) if binary else None,
        tuple(np.sum([np.asarray(n) for _, n in hists], axis=0).tolist()) if binary else None,
    )


def figures(total: Evaluation) -> SiloScore:
    """Loss, accuracy and (binary) ROC AUC of one evaluation's sums, NaN where undefined."""
    undefined: dict[str, str] = {}
    if total.examples == 0:
        undefined.update(loss="no validation rows", accuracy="no validation rows")
    auc: float | None = None
    if total.positive_hist is not None and total.negative_hist is not None:
        auc = auc_from_histograms(np.asarray(total.positive_hist), np.asarray(total.negative_hist))
        if auc is None:
            auc = NAN
            undefined["auc"] = (
                "no validation rows" if total.examples == 0 else "a single class in its validation rows"
            )
    return SiloScore(total.examples, total.loss, total.accuracy, auc, undefined)


def combine(after_round: int, evaluations: Sequence[Evaluation]) -> GlobalEval:
    overall = figures(add(evaluations))
    auc = None if overall.auc is None or math.isnan(overall.auc) else overall.auc
    per_silo = {e.silo: figures(e) for e in evaluations}
    return GlobalEval(after_round, overall.examples, overall.loss, overall.accuracy, auc, per_silo)


def undefined_figures(per_silo: Mapping[str, SiloScore]) -> dict[str, dict[str, str]]:
    """silo -> {figure: why it is undefined}, for the silos with any undefined figure."""
    return {name: dict(score.undefined) for name, score in per_silo.items() if score.undefined}

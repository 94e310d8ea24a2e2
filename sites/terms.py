"""What a coordinator asks a site to serve, and a site's refusal: the values its policy judges."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from silo.task import TaskSpec

TABULAR = "tabular"  # the built-in tables' task, in `approved_tasks` and `RunTerms.task`


@dataclass(frozen=True)
class RunTerms:
    """One run as the coordinator declares it to every site, before any data is opened."""

    run_id: str
    pipeline: str  # the pipeline's name
    pipeline_sha256: str  # of the pipeline file's bytes
    task: str  # TABULAR, or the sha256 of the task module's file
    model: str  # [model] kind: logistic | mlp | package.module:factory ("" for a [task]: its hash rules)
    he: str  # off | ckks | packed
    secagg: bool  # pairwise masking in every sum
    dp: str  # off | record | silo
    epsilon: float | None  # the run's target epsilon (None: no DP)
    delta: float | None
    min_silos: int  # no sum is made of fewer silos' updates
    rounds: int
    silos: int  # silos in the federation (this site's included)


@dataclass(frozen=True)
class Refusal:
    """A site's policy said no: which site, which rule (a SITE.toml [policy] key), and why."""

    site: str
    rule: str
    detail: str

    def message(self) -> str:
        return f"site {self.site!r} refuses ({self.rule}): {self.detail}"


def task_id(task: TaskSpec | None) -> str:
    """How a run's task is named in RunTerms and approved_tasks: TABULAR or the file's sha256."""
    if task is None:
        return TABULAR
    if task.source is None:
        return task.module  # an importable module: never in approved_tasks (digests only)
    return hashlib.sha256(task.source).hexdigest()

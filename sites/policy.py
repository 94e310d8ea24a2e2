"""A site's [policy] as pure functions: the run's terms, each request, each answer (no Ray, no network).

fedsilo site serve --site SITE.toml   # judges every request the coordinator forwards with these

Each refusal names the SITE.toml [policy] key that refused and says concretely why.
"""

from __future__ import annotations

from collections.abc import Iterable

from privacy.secagg import MaskDeal, MaskRound, UnmaskRequest
from silo.messages import Evaluation, FitIns, FitRes
from sites.config import LoadedSite
from sites.terms import TABULAR, Refusal, RunTerms

BUILT_IN_MODELS = ("logistic", "mlp")  # any other [model] kind imports code on the site


def _unique(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


def metric_names(result: object) -> tuple[str, ...]:
    """The names of the metrics an answer carries (never their values)."""
    if isinstance(result, Evaluation):
        return tuple(result.as_sums())
    if isinstance(result, FitRes):
        return _unique([*metric_names(result.evaluation), "train_loss"])
    if isinstance(result, dict) and all(isinstance(v, Evaluation) for v in result.values()):
        return _unique(name for value in result.values() for name in metric_names(value))
    return ()


def _dp_refusals(site: LoadedSite, terms: RunTerms) -> list[Refusal]:
    policy, refusals = site.config.policy, []
    for rule, limit, value in (
        ("max_epsilon", policy.max_epsilon, terms.epsilon),
        ("max_delta", policy.max_delta, terms.delta),
    ):
        name = rule.removeprefix("max_")
        if limit is None:
            continue
        if terms.dp == "off" or value is None:
            without = (
                "has no differential privacy (dp = 'off')" if terms.dp == "off" else f"declares no {name}"
            )
            detail = f"the run {without}; this site requires {name} <= {limit}"
            refusals.append(Refusal(site.name, rule, detail))
        elif value > limit:
            detail = f"the run targets {name} {value}; this site allows at most {limit}"
            refusals.append(Refusal(site.name, rule, detail))
    return refusals


def check_terms(site: LoadedSite, terms: RunTerms, coordinator_sha256: str) -> list[Refusal]:
    """Every [policy] rule the run breaks; empty: this site serves it."""
    policy, name = site.config.policy, site.name
    refusals: list[Refusal] = []
    fingerprint = coordinator_sha256.replace(":", "").lower()
    if fingerprint != site.pinned_sha256 and fingerprint not in policy.coordinators:
        detail = f"coordinator certificate sha256 {fingerprint} is neither the pinned one nor listed"
        refusals.append(Refusal(name, "coordinators", detail))
    if policy.pipelines and terms.pipeline not in policy.pipelines:
        detail = f"pipeline {terms.pipeline!r} is not among the pipelines served: {policy.pipelines}"
        refusals.append(Refusal(name, "pipelines", detail))
    if terms.task not in policy.approved_tasks:
        if terms.task == TABULAR:
            detail = f"the run uses the built-in tables ({TABULAR!r}), which this site does not serve"
        else:
            detail = f"the run's task file has sha256 {terms.task}; add it to approved_tasks to serve it"
        refusals.append(Refusal(name, "approved_tasks", detail))
    if terms.model and terms.model not in BUILT_IN_MODELS and terms.model not in policy.approved_tasks:
        detail = (
            f"the run's model {terms.model!r} imports code on this site; add it to approved_tasks verbatim"
        )
        refusals.append(Refusal(name, "approved_tasks", detail))
    if policy.require_he and terms.he == "off":
        refusals.append(Refusal(name, "require_he", "the run sends updates unencrypted (he = 'off')"))
    if policy.require_secagg and not terms.secagg:
        refusals.append(Refusal(name, "require_secagg", "the run sums updates without pairwise masking"))
    refusals += _dp_refusals(site, terms)
    if terms.min_silos < policy.min_silos:
        detail = (
            f"the run sums updates of at least {terms.min_silos} silos; this site requires {policy.min_silos}"
        )
        refusals.append(Refusal(name, "min_silos", detail))
    if terms.silos < policy.min_silos:
        detail = f"the federation has {terms.silos} silos; this site requires sums of {policy.min_silos}"
        refusals.append(Refusal(name, "min_silos", detail))
    if policy.max_rounds is not None and terms.rounds > policy.max_rounds:
        detail = f"the run has {terms.rounds} rounds; this site serves at most {policy.max_rounds}"
        refusals.append(Refusal(name, "max_rounds", detail))
    return refusals


def _sum_members(arg: object) -> tuple[str, ...] | None:
    """Whose updates a masked sum adds up: a deal's or a masked round's members, an unmask's survivors."""
    if isinstance(arg, MaskDeal | MaskRound):
        return tuple(arg.members)
    if isinstance(arg, UnmaskRequest):
        return tuple(arg.survivors)
    return None


def check_call(site: LoadedSite, terms: RunTerms, method: str, args: tuple[object, ...]) -> Refusal | None:
    """One request, before the silo serves it; None: serve it."""
    policy, name = site.config.policy, site.name
    if method == "publish" and not policy.publish:
        return Refusal(name, "publish", "this site does not decrypt and register the final model")
    if method == "score_models" and terms.task != TABULAR:
        # A registered task model is its task file and a pickled module: loading it runs code
        # the registry holds, not the file this site approved.
        detail = "scoring a registered task model would unpickle code from the registry"
        return Refusal(name, "approved_tasks", detail)
    rounds = policy.max_rounds
    for arg in args:
        if method == "fit" and isinstance(arg, FitIns) and rounds is not None and arg.round > rounds:
            return Refusal(
                name, "max_rounds", f"round {arg.round} asked; this site serves at most {rounds} rounds"
            )
        members = _sum_members(arg)
        if members is not None and len(members) < policy.min_silos:
            detail = (
                f"{method}: the masked sum has {len(members)} member(s) ({', '.join(members)}); "
                f"this site requires at least {policy.min_silos}"
            )
            return Refusal(name, "min_silos", detail)
    return None


def check_answer(site: LoadedSite, method: str, result: object) -> Refusal | None:
    """One answer, before it leaves the site; None: send it."""
    policy, name = site.config.policy, site.name
    if policy.allowed_metrics is not None:
        disallowed = [m for m in metric_names(result) if m not in policy.allowed_metrics]
        if disallowed:
            detail = (
                f"the answer to {method} carries metric(s) {', '.join(disallowed)} not in allowed_metrics"
            )
            return Refusal(name, "allowed_metrics", detail)
    limit = policy.max_epsilon
    if (
        isinstance(result, FitRes)
        and result.epsilon is not None
        and limit is not None
        and result.epsilon > limit
    ):
        spent = f"{result.epsilon:.4g}"
        detail = f"round {result.round} would bring this site's epsilon to {spent}; it allows at most {limit}"
        return Refusal(name, "max_epsilon", detail)
    return None

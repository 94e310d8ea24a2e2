"""Differential privacy as the run reports it: the delta check, registry tags, the model card.

fedsilo validate my_pipeline.toml     # refuses delta >= 1/n, naming the silo
"""

from __future__ import annotations

import math
from typing import Any

from pipelines.spec import Pipeline
from privacy.secagg import default_threshold

PREFIX = "fedsilo.privacy."


def training_rows_estimate(rows: int, validation_fraction: float) -> int:
    """Training rows of a silo with ``rows`` rows (the stratified split may differ by a row or two)."""
    return rows - int(round(validation_fraction * rows))


def _suggest(n: int) -> str:
    return f"{10.0 ** (math.floor(math.log10(1.0 / n)) - 1):g}"


def delta_problems(spec: Pipeline, train_rows: dict[str, int]) -> list[str]:
    """delta must be below 1/n, else a mechanism that publishes each record with probability
    delta would qualify. Record level: n is each silo's training rows (every silo's records are
    protected by its own DP-SGD, so the largest silo binds); silo level: n is the number of silos."""
    p = spec.privacy
    if p.dp == "off":
        return []
    if p.dp == "silo":
        n = len(spec.silos)
        if p.delta >= 1.0 / n:
            return [
                f"privacy.delta = {p.delta:g} is not below 1/{n} (dp = 'silo' protects each of the {n} "
                f"silos): choose delta < {1.0 / n:.3g}, e.g. {_suggest(n)}"
            ]
        return []
    problems = []
    for silo, n in sorted(train_rows.items(), key=lambda item: item[1]):
        if n > 0 and p.delta >= 1.0 / n:
            problems.append(
                f"silo {silo!r}: privacy.delta = {p.delta:g} is not below 1/{n} (its {n} training rows): "
                f"choose delta < {1.0 / n:.3g}, e.g. {_suggest(n)}"
            )
    return problems


def privacy_line(spec: Pipeline) -> str:
    """One line for `fedsilo validate`: what protects updates and the model."""
    p, n = spec.privacy, len(spec.silos)
    if spec.secagg:
        threshold = p.threshold or default_threshold(n)
        secagg = (
            f"pairwise masks, threshold {threshold} of {n} silos (of each sum's silos when fewer take part)"
        )
    else:
        secagg = "off"
    return f"privacy: he {p.he}, secure aggregation {secagg}, dp {p.dp}"


def privacy_tags(spec: Pipeline, codec: dict[str, str], summary: dict[str, Any]) -> dict[str, str]:
    """``fedsilo.privacy.*`` tags for the registered model version and the run.
    ``summary``: `RunSummary.privacy` (epsilon and noise multiplier per silo, contributors)."""
    p = spec.privacy
    tags = {
        "dp": p.dp,
        "he.scheme": codec.get("scheme", p.he),
        "contributing_silos": ",".join(summary.get("contributors", [])),
        # secure aggregation: whether a coalition of the orchestrator and a silo could read an update
        "secagg": codec.get("secagg", "off"),
    }
    tags.update({f"he.{k}": str(v) for k, v in codec.items() if k not in ("scheme", "secagg")})
    if p.dp != "off":
        epsilon: dict[str, float] = summary.get("epsilon", {})
        sigma: dict[str, float] = summary.get("noise_multiplier", {})
        tags.update(
            {
                "epsilon": f"{max(epsilon.values()):.4f}" if epsilon else "0",
                "epsilon_target": f"{p.target_epsilon:g}" if p.target_epsilon is not None else "none",
                "delta": f"{p.delta:g}",
                "max_grad_norm": f"{p.max_grad_norm:g}",
                "clipping": "per-sample gradient" if p.dp == "record" else "silo update (L2)",
                "noise_multiplier": f"{max(sigma.values()):.4f}" if sigma else "",
                "accountant": p.accountant,
            }
        )
        if p.dp == "record":
            tags.update({f"epsilon.{silo}": f"{value:.4f}" for silo, value in epsilon.items()})
            tags.update({f"noise_multiplier.{silo}": f"{value:.4f}" for silo, value in sigma.items()})
        else:
            tags["noise_shares_for"] = str(spec.min_silos)
    return {PREFIX + key: value for key, value in tags.items()}


def check_warm_start_privacy(dp: str, source: str, source_tags: dict[str, str]) -> str | None:
    """Why a run with ``dp`` must not start from a version with these tags, or None.
    A DP run's epsilon covers its own rounds only; the source's training on the same silos
    must be DP in the same sense for the two to compose (see `chained_privacy`)."""
    source_dp = source_tags.get(PREFIX + "dp", "off")
    if dp == "off" or source_dp == dp:
        return None
    return (
        f"{source} was trained with privacy.dp = {source_dp!r}; this run's dp = {dp!r} would publish "
        f"a model whose epsilon does not cover that training on the same silos; start cold (remove "
        f"model.from) or train the source with dp = {dp!r}"
    )


def chained_privacy(tags: dict[str, str], source: str, source_tags: dict[str, str]) -> dict[str, str]:
    """Tags for a DP run warm-started from a DP version: epsilon and delta over the whole chain
    by basic composition (their sums, an upper bound: the same silos' data may be in both)."""

    def total(key: str) -> float:
        return float(source_tags.get(PREFIX + key + "_total", source_tags.get(PREFIX + key, "0")))

    chain = source_tags.get(PREFIX + "chain", "")
    return {
        PREFIX + "epsilon_total": f"{total('epsilon') + float(tags[PREFIX + 'epsilon']):.4f}",
        PREFIX + "delta_total": f"{total('delta') + float(tags[PREFIX + 'delta']):g}",
        PREFIX + "chain": ",".join(filter(None, [chain, source])),
    }


def privacy_card(spec: Pipeline, summary: dict[str, Any], stopped: str | None) -> str:
    """The model card's words on differential privacy (one bullet list)."""
    p = spec.privacy
    contributors = ", ".join(summary.get("contributors", [])) or "none"
    if p.dp == "off":
        return (
            "- differential privacy: off (the released model is not protected against membership inference)\n"
            f"- silos that contributed: {contributors}"
        )
    epsilon: dict[str, float] = summary.get("epsilon", {})
    sigma: dict[str, float] = summary.get("noise_multiplier", {})
    spent = max(epsilon.values()) if epsilon else 0.0
    budget = f" of a budget of {p.target_epsilon:g}" if p.target_epsilon is not None else ""
    if p.dp == "record":
        what = (
            "record-level (DP-SGD with Opacus in every silo): each training record's gradient was "
            f"clipped to L2 norm {p.max_grad_norm:g} and Gaussian noise added; batches were "
            f"Poisson-sampled. Epsilon ({p.accountant} accountant) bounds what the model reveals about "
            f"any one record of a silo: at most {spent:.3f}{budget}, delta {p.delta:g}."
        )
        per_silo = "; ".join(
            f"{s}: epsilon {epsilon[s]:.3f}, noise multiplier {sigma.get(s, float('nan')):.3f}"
            for s in sorted(epsilon)
        )
        detail = f"- per silo: {per_silo}"
    else:
        multiplier = max(sigma.values()) if sigma else float("nan")
        what = (
            "silo-level (distributed noise): each silo clipped its update to L2 norm "
            f"{p.max_grad_norm:g} and added a share of Gaussian noise, sized so that any "
            f"{spec.min_silos} silos' shares add up to noise multiplier {multiplier:.3f} times that "
            "bound; updates were averaged with equal weight. Epsilon "
            f"({p.accountant} accountant over the rounds) bounds what the model reveals about any one "
            f"silo's whole data set: {spent:.3f}{budget}, delta {p.delta:g}. It assumes the silos add "
            "their share honestly; silos that collude can remove their own shares."
        )
        detail = ""
    lines = [f"- differential privacy: {what}"]
    if detail:
        lines.append(detail)
    if stopped:
        lines.append(f"- training stopped early: {stopped.splitlines()[0]}")
    lines.append(f"- silos that contributed: {contributors}")
    return "\n".join(lines)

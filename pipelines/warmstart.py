"""Warm start: a run whose round 1 starts from a registered model, not the seeded one.

    [model]
    from = "models:/heart-disease-classifier@champion"   # or models:/NAME/VERSION

The driver resolves the URI to a version before any silo starts (a missing model, alias
or version is a clear error listing what exists); each silo then downloads that version
on its own node and checks it fits (parameter count, model inputs, classes) before it
becomes the initial model (`silo.registered.warm_start_weights`).

A scheduled run warm-starts from the champion when there is one:

    from pipelines.warmstart import with_champion_warm_start
    loaded = with_champion_warm_start(load_pipeline("pipeline.toml"))
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from pipelines.privacy_report import check_warm_start_privacy
from pipelines.registry import CHAMPION, Registry, RegistryError, ResolvedModel
from pipelines.spec import LoadedPipeline
from pipelines.tracking import resolve_tracking_uri

logger = logging.getLogger(__name__)


def resolve_warm_start(loaded: LoadedPipeline, tracking_uri: str) -> ResolvedModel | None:
    """The version ``[model] from`` names now (None for a cold start)."""
    source = loaded.spec.model.from_
    if source is None:
        return None
    try:
        resolved = Registry(tracking_uri).resolve(source)
    except RegistryError as err:
        raise RegistryError(f"{loaded.path.name}: model.from: {err}", err.exit_code) from None
    refusal = check_warm_start_privacy(loaded.spec.privacy.dp, resolved.describe(), resolved.tags)
    if refusal is not None:
        raise RegistryError(f"{loaded.path.name}: model.from: {refusal}", 2)
    return resolved


def with_champion_warm_start(loaded: LoadedPipeline, tracking_uri: str | None = None) -> LoadedPipeline:
    """``loaded`` with ``[model] from = "models:/<registered_model>@champion"`` when that alias
    exists (and no ``from`` is set); otherwise unchanged (a cold start), logging why.

    For the scheduler: every scheduled run retrains from the model in production."""
    spec = loaded.spec
    if spec.model.from_ is not None:
        logger.info("warm start: the pipeline already starts from %s", spec.model.from_)
        return loaded
    uri = resolve_tracking_uri(tracking_uri or spec.tracking.mlflow_uri)  # like `fedsilo run`: from the cwd
    name = spec.registered_model
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        logger.warning("warm start: none, a cold start (no MLflow store at %s yet)", uri)
        return loaded  # and do not create one by asking
    try:
        champion = Registry(uri).by_alias(name, CHAMPION)
    except RegistryError as err:
        logger.warning("warm start: none, a cold start (%s)", err)
        return loaded
    if champion is None:
        logger.warning("warm start: none, a cold start (%s has no @%s yet)", name, CHAMPION)
        return loaded
    source = f"models:/{name}@{CHAMPION}"
    refusal = check_warm_start_privacy(
        spec.privacy.dp, f"{source} (version {champion.version})", dict(champion.tags or {})
    )
    if refusal is not None:
        logger.warning("warm start: none, a cold start (%s)", refusal)
        return loaded
    logger.info("warm start: from %s (version %s)", source, champion.version)
    model = spec.model.model_copy(update={"from_": source})
    return replace(loaded, spec=spec.model_copy(update={"model": model}))

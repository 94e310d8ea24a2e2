"""Validated pipeline -> the frozen settings each component is constructed with."""

from __future__ import annotations

from collections.abc import Callable

from orchestrator.settings import OrchestratorSettings
from orchestrator.strategies import ROBUST, Strategy, make_strategy
from pipelines.spec import LoadedPipeline, PipelineError
from privacy.dp import DPConfig
from privacy.keyfile import PUBLIC_NAME, SECRET_NAME, read_public_key_file
from privacy.params import CKKSParams, HEConfig, PackedParams
from silo.config import DataSpec, ModelSpec, SiloSpec
from silo.data import canonical
from silo.task import TaskError, TaskSpec


def _tuple(values: list[str] | None) -> tuple[str, ...] | None:
    return tuple(values) if values is not None else None


def data_spec(loaded: LoadedPipeline) -> DataSpec:
    d = loaded.spec.table
    return DataSpec(
        target=d.target,
        features=_tuple(d.features),
        categorical=tuple(d.categorical),
        missing=d.missing,
        na_values=tuple(d.na_values),
        columns=_tuple(d.columns),
        positive=tuple(canonical(v) for v in d.positive) if d.positive is not None else None,
        ignore=tuple(d.ignore),
        validation_fraction=d.validation_fraction,
        seed=d.seed,
    )


def task_spec(loaded: LoadedPipeline) -> TaskSpec | None:
    """[task] with the file's bytes (read here, on the driver; every silo runs exactly them)."""
    t = loaded.spec.task
    if t is None:
        return None
    config = {"validation_fraction": t.validation_fraction, **t.config}
    try:
        return TaskSpec.read(t.module, loaded.path.parent, t.kind, config, t.buffers)
    except TaskError as err:
        raise PipelineError(loaded.path, [f"task.module: {err}"]) from err


def ckks_params(loaded: LoadedPipeline) -> CKKSParams:
    c = loaded.spec.privacy.ckks
    return CKKSParams(c.poly_modulus_degree, tuple(c.coeff_mod_bit_sizes), c.scale_bits)


def packed_params(loaded: LoadedPipeline) -> PackedParams:
    p = loaded.spec.privacy.packed
    return PackedParams(
        poly_modulus_degree=p.poly_modulus_degree,
        plain_modulus_bits=p.plain_modulus_bits,
        value_bits=p.value_bits,
        max_silos=p.max_silos or max(2, len(loaded.spec.silos)),
    )


def he_config(loaded: LoadedPipeline) -> HEConfig:
    return HEConfig(scheme=loaded.spec.privacy.he, ckks=ckks_params(loaded), packed=packed_params(loaded))


def keys_folder(loaded: LoadedPipeline) -> str | None:
    keys = loaded.spec.privacy.keys
    return loaded.resolve(keys) if keys is not None else None


def dp_config(loaded: LoadedPipeline) -> DPConfig:
    spec = loaded.spec
    p = spec.privacy
    return DPConfig(
        mode=p.dp,
        target_epsilon=p.target_epsilon,
        delta=p.delta,
        noise_multiplier=p.noise_multiplier,
        max_grad_norm=p.max_grad_norm,
        accountant=p.accountant,
        planned_rounds=spec.rounds,
        min_silos=spec.min_silos,
    )


def silo_specs(
    loaded: LoadedPipeline,
    key_backup: Callable[[str], str] | None = None,
    resume: bool = False,
    dp_state: Callable[[str], str] | None = None,
    warm_start: tuple[str, str] | None = None,
    tracking_uri: str | None = None,
) -> list[SiloSpec]:
    """``key_backup(silo)``: where that silo keeps a copy of the run's HE key (checkpointed
    runs). ``resume``: silos read the key from there instead of receiving a fresh one.
    ``dp_state(silo)``: where that silo keeps its privacy accountant (DP runs).
    ``warm_start``: (resolved ``models:/NAME/VERSION``, tracking URI) of the initial model.
    ``tracking_uri``: the run's store, which the publishing silo opens while rounds run."""
    spec = loaded.spec
    data = data_spec(loaded) if spec.data is not None else None
    task = task_spec(loaded)
    model = ModelSpec(kind=spec.model.kind, hidden=tuple(spec.model.hidden))
    keys = keys_folder(loaded)
    store = warm_start[1] if warm_start else tracking_uri
    specs = []
    for s in spec.silos:
        backup = key_backup(s.name) if key_backup and not keys and spec.privacy.he != "off" else None
        secret = f"{keys}/{SECRET_NAME}" if keys else (backup if resume else None)
        specs.append(
            SiloSpec(
                name=s.name,
                path=loaded.silo_path(s),
                data=data,
                model=model,
                he=he_config(loaded),
                he_secret_path=secret,
                he_key_backup_path=backup,
                seed=spec.training.seed,
                dp=dp_config(loaded),
                dp_state_path=dp_state(s.name) if dp_state and spec.privacy.dp != "off" else None,
                initial_model=warm_start[0] if warm_start else None,
                tracking_uri=store if warm_start or s.name == spec.publisher else None,
                task=task,
                publishes=s.name == spec.publisher,
                workers=max(1, int(spec.resources.cpus_per_silo)),
            )
        )
    return specs


def strategy(loaded: LoadedPipeline) -> Strategy:
    t = loaded.spec.training
    params: dict[str, object] = {
        "local_epochs": t.local_epochs,
        "batch_size": t.batch_size,
        "lr": t.lr,
        "optimizer": t.optimizer,
        "momentum": t.momentum,
        "seed": t.seed,
        "local_steps": t.local_steps,
        "weighting": "uniform" if loaded.spec.privacy.dp == "silo" else "examples",
    }
    if t.strategy == "fedprox":
        params["mu"] = t.mu
    if t.clip_norm is not None:
        params["clip_norm"] = t.clip_norm
    if t.strategy in ("fedadam", "fedyogi", "fedadagrad"):
        params.update(server_lr=t.server_lr, beta1=t.beta1, beta2=t.beta2, tau=t.tau)
    if t.strategy in ROBUST:
        params.update(trim_fraction=t.trim_fraction, byzantine=t.byzantine, multi_krum_m=t.multi_krum_m)
        params["robust_weighting"] = t.robust_weighting
    return make_strategy(t.strategy, **params)


def orchestrator_settings(
    loaded: LoadedPipeline, known_key: tuple[bytes, str] | None = None
) -> OrchestratorSettings:
    """Reads the public key file (if keys are provisioned) on the driver's machine.
    ``known_key``: (public context, key id) the silos already hold (resumed runs)."""
    spec = loaded.spec
    keys = keys_folder(loaded)
    he = he_config(loaded)
    provisioned = read_public_key_file(f"{keys}/{PUBLIC_NAME}", he) if keys else known_key
    return OrchestratorSettings(
        min_silos=spec.min_silos,
        round_timeout_s=spec.round_timeout_s,
        round_retries=spec.round_retries,
        piece_values=spec.piece_values,
        he=he,
        provisioned_public=provisioned,
        fraction=spec.fraction,
        selection_seed=spec.training.seed,
        task=task_spec(loaded),
        secagg=spec.secagg,
        secagg_threshold=spec.privacy.threshold,
    )

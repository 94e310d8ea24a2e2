"""A registered model, loaded on the silo's own node: warm start from it, or score it.

Nothing of the silo's data leaves: warm start turns the registered weights into this
run's initial model; scoring returns only sums (`Evaluation`).

    python -c "from silo.registered import fetch; \
m = fetch('sqlite:///mlruns.db', 'models:/heart-disease-classifier/1'); print(m.flat.size)"
"""

from __future__ import annotations

import copy
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from silo.config import DataSpec
from silo.data import labels
from silo.messages import Evaluation
from silo.models import count_parameters, get_flat, set_flat
from silo.preprocess import Preprocessor
from silo.retry import retry_transient
from silo.train import score_logits

logger = logging.getLogger(__name__)

WEIGHTS = "weights.npy"  # the flat weight vector (silo.models.get_flat), logged with the model


class RegisteredModelError(ValueError):
    """A registered model that cannot be used here; the message names the model URI."""


@dataclass(frozen=True)
class RegisteredModel:
    uri: str
    flat: np.ndarray | None  # None: registered before fedsilo logged weights.npy
    preprocessor: Preprocessor
    program: Any  # torch.export.ExportedProgram


def download(tracking_uri: str, model_uri: str, folder: str) -> Path:
    """Download ``models:/NAME/VERSION`` into ``folder``; return its ``artifacts`` folder."""
    import mlflow
    from mlflow.tracking import MlflowClient

    name, _, version = model_uri.removeprefix("models:/").rpartition("/")
    # Registry and tracking store are the pipeline's, never MLflow's default ./mlflow.db.
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    source = retry_transient(
        lambda: client.get_model_version_download_uri(name, version), f"locating {model_uri}", tracking_uri
    )
    root = retry_transient(
        lambda: mlflow.artifacts.download_artifacts(
            artifact_uri=source, tracking_uri=tracking_uri, dst_path=folder
        ),
        f"downloading {model_uri}",
        tracking_uri,
    )
    return Path(root) / "artifacts"


def fetch(tracking_uri: str, model_uri: str) -> RegisteredModel:
    """Download ``models:/NAME/VERSION`` and read its weights, preprocessing and program."""
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = download(tracking_uri, model_uri, tmp)
        pre_path, program_path = artifacts / "preprocessing.json", artifacts / "model.pt2"
        if not pre_path.is_file() or not program_path.is_file():
            raise RegisteredModelError(
                f"{model_uri} is not a fedsilo model (no preprocessing.json/model.pt2)"
            )
        weights = artifacts / WEIGHTS
        flat = np.load(weights) if weights.is_file() else None
        program = torch.export.load(str(program_path))
        return RegisteredModel(model_uri, flat, Preprocessor.from_json(pre_path.read_text()), program)


def _check_compatible(registered: RegisteredModel, model: nn.Module, pre: Preprocessor) -> np.ndarray:
    uri, old = registered.uri, registered.preprocessor
    if registered.flat is None:
        raise RegisteredModelError(
            f"{uri} was registered without {WEIGHTS} (an older fedsilo): cannot warm start"
        )
    expected = count_parameters(model)
    if registered.flat.size != expected:
        raise RegisteredModelError(
            f"{uri} has {registered.flat.size} parameters, this pipeline's model has {expected}: "
            "did the features, their categories or [model] change?"
        )
    if old.output_names != pre.output_names:
        added = [n for n in pre.output_names if n not in old.output_names]
        removed = [n for n in old.output_names if n not in pre.output_names]
        raise RegisteredModelError(
            f"{uri} was trained on other model inputs: this pipeline adds {added or 'none'} and "
            f"lacks {removed or 'none'}"
        )
    if old.classes != pre.classes:
        raise RegisteredModelError(
            f"{uri} predicts classes {list(old.classes)}, this pipeline {list(pre.classes)}"
        )
    return registered.flat


def _first_linear(model: nn.Module, n_inputs: int) -> nn.Linear | None:
    """The layer the inputs go into, for the built-in kinds (and custom models shaped alike)."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            return module if module.in_features == n_inputs else None
        if any(True for _ in module.parameters(recurse=False)):
            return None
    return None


def warm_start_weights(
    registered: RegisteredModel, model: nn.Module, pre: Preprocessor
) -> tuple[np.ndarray, str]:
    """The registered weights as this run's initial model, and how they were carried over.

    Standardization is recomputed federatedly every run, so the registered weights are
    rebased onto this run's means and standard deviations: for the first linear layer,
    W'[:, j] = W[:, j] * s_new / s_old and b' = b + sum_j W[:, j] (m_new - m_old) / s_old,
    which makes the warm-started model compute exactly what the registered one did on
    every input without gaps (imputed gaps now take this run's means)."""
    flat = _check_compatible(registered, model, pre)
    old = registered.preprocessor
    work = copy.deepcopy(model).cpu()
    set_flat(work, flat)
    layer = _first_linear(work, len(pre.output_names))
    if layer is None:
        logger.warning(
            "%s: first layer is not linear over the inputs; weights used as registered", registered.uri
        )
        return flat, "as registered (first layer not linear: not rebased to this run's standardization)"
    k = len(pre.numeric)
    scale = torch.tensor(np.asarray(pre.stds) / np.asarray(old.stds), dtype=layer.weight.dtype)
    shift = torch.tensor((np.asarray(pre.means) - np.asarray(old.means)) / np.asarray(old.stds),
                         dtype=layer.weight.dtype)  # fmt: skip
    with torch.no_grad():
        numeric = layer.weight[:, :k].clone()
        if layer.bias is not None:
            layer.bias.add_(numeric @ shift)
        layer.weight[:, :k] = numeric * scale
    note = "rebased to this run's standardization" if layer.bias is not None or not shift.any() else (
        "scaled to this run's standardization (no bias to absorb the shift of means)"
    )  # fmt: skip
    return get_flat(work), note


def validation_rows(raw: pd.DataFrame, features: tuple[str, ...], spec: DataSpec) -> pd.DataFrame:
    """The same held-out rows training validates on (`SiloWorker.stats_sums`' split)."""
    from silo.data import split_indices

    frame = raw.dropna(subset=list(features)).reset_index(drop=True) if spec.missing == "drop" else raw
    _, val = split_indices(labels(spec, frame[spec.target]).to_numpy(), spec.validation_fraction, spec.seed)
    return frame.iloc[val].reset_index(drop=True)


def score(registered: RegisteredModel, rows: pd.DataFrame, silo: str) -> Evaluation:
    """``registered`` on ``rows`` (raw columns), as sums: nothing row-level leaves."""
    pre = registered.preprocessor
    seen = set(labels_of(pre, rows[pre.target]))
    unknown = sorted(seen - set(pre.classes))
    if unknown:
        raise RegisteredModelError(
            f"silo {silo!r}: {registered.uri} predicts classes {list(pre.classes)}, "
            f"the silo's rows have {unknown}"
        )
    x = torch.from_numpy(pre.transform(rows))
    y = torch.from_numpy(pre.encode_target(rows[pre.target]))
    with torch.no_grad():
        logits = registered.program.module()(x)
    return score_logits(logits, y, pre.binary, silo)


def labels_of(pre: Preprocessor, target: pd.Series) -> list[str]:
    spec = DataSpec(target=pre.target, positive=pre.positive)
    return list(labels(spec, target))


def fetch_task_weights(tracking_uri: str, model_uri: str, size: int) -> np.ndarray:
    """A registered task model's exchanged vector, as a warm start's initial model; it must have
    the ``size`` values this pipeline's model exchanges."""
    with tempfile.TemporaryDirectory() as tmp:
        weights = download(tracking_uri, model_uri, tmp) / WEIGHTS
        if not weights.is_file():
            raise RegisteredModelError(f"{model_uri} has no {WEIGHTS}: not a fedsilo model")
        flat = np.load(weights)
    if flat.size != size:
        raise RegisteredModelError(
            f"{model_uri} has {flat.size} exchanged values, this pipeline's model {size}: did model() or "
            "[task] buffers change?"
        )
    return flat


def fetch_task_module(tracking_uri: str, model_uri: str) -> nn.Module:
    """A registered task model's whole module (its task file is run first, so its classes resolve)."""
    import json

    from silo.task import exec_source

    with tempfile.TemporaryDirectory() as tmp:
        artifacts = download(tracking_uri, model_uri, tmp)
        task, module = artifacts / "task.py", artifacts / "module.pt"
        if not task.is_file() or not module.is_file():
            raise RegisteredModelError(f"{model_uri} is not a fedsilo task model (no task.py/module.pt)")
        settings = (
            json.loads((artifacts / "task.json").read_text()) if (artifacts / "task.json").is_file() else {}
        )
        exec_source(task.read_bytes(), Path(settings.get("name", "task.py")))
        loaded: nn.Module = torch.load(module, weights_only=False, map_location="cpu")
    return loaded

"""The publishing silo logs the final global model to MLflow and registers it.

The built-in tables' model is a pyfunc that includes its preprocessing (`silo/serving.py`); its
input example is a synthetic row of federated means and modes, never a patient's record. A
task's model ships the task file and calls its ``predict`` (`silo/task_serving.py`); it has no
input example, since any example would be a silo's record.
"""

from __future__ import annotations

import copy
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from silo.inference import predict_frame
from silo.messages import PublishedModel, PublishRequest
from silo.models import get_flat
from silo.preprocess import Preprocessor
from silo.registered import WEIGHTS
from silo.retry import retry_transient
from silo.task import Task, TaskSpec

TASK_FILE = "task.py"  # the task file, as the registered model ships it

logger = logging.getLogger(__name__)

SILO_DIR = Path(__file__).resolve().parent


def export_program(model: nn.Module, n_inputs: int, path: Path) -> None:
    module = copy.deepcopy(model).cpu().eval()
    example = (torch.zeros(2, n_inputs),)
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(module, example, dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))


def publish_model(model: nn.Module, pre: Preprocessor, request: PublishRequest) -> PublishedModel:
    import mlflow
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    mlflow.set_tracking_uri(request.tracking_uri)
    example = pre.example_row()
    output = predict_frame(copy.deepcopy(model).cpu().eval(), pre, example)
    # Any: raw columns arrive as int, float or str depending on the file; the
    # preprocessor inside the model coerces them, MLflow's int->double check would refuse.
    inputs = Schema([ColSpec(AnyType(), name) for name in pre.inputs])
    signature = ModelSignature(inputs=inputs, outputs=infer_signature(example, output).outputs)
    requirements = _requirements()
    with tempfile.TemporaryDirectory() as tmp:
        program = Path(tmp) / "model.pt2"
        export_program(model, len(pre.output_names), program)
        preprocessing = Path(tmp) / "preprocessing.json"
        preprocessing.write_text(pre.to_json())
        weights = Path(tmp) / WEIGHTS  # for warm starts: `set_flat` on a freshly built model
        np.save(weights, get_flat(model))
        artifacts = {"program": str(program), "preprocessing": str(preprocessing), "weights": str(weights)}
        return log_and_register(request, "serving.py", artifacts, requirements, signature=signature,
                                input_example=example)  # fmt: skip


def _requirements() -> list[str]:
    import mlflow

    return [f"torch=={torch.__version__.split('+')[0]}", "pandas", "numpy", f"mlflow=={mlflow.__version__}"]


def log_and_register(
    request: PublishRequest, serving: str, artifacts: dict[str, str], requirements: list[str], **extra: Any
) -> PublishedModel:
    """Log a "models from code" pyfunc (``serving``, a file of this package, which ships with it) into
    the run, then register it with the alias."""
    import mlflow

    with mlflow.start_run(run_id=request.run_id):
        info = retry_transient(
            lambda: mlflow.pyfunc.log_model(
                name="model", python_model=str(SILO_DIR / serving), artifacts=artifacts,
                code_paths=[str(SILO_DIR)], pip_requirements=requirements, **extra,
            ),
            "logging the model",
            request.tracking_uri,
        )  # fmt: skip
    version = register_version(request, info.model_uri)
    logger.info("registered %s version %s as @%s", request.registered_model, version, request.alias)
    return PublishedModel(
        request.registered_model, version, request.alias, f"models:/{request.registered_model}/{version}"
    )


def register_version(request: PublishRequest, model_uri: str) -> str:
    """Register ``model_uri`` with its tags in one call, then set the alias; a version whose
    alias cannot be set is deleted, so the registry never holds a half-registered version."""
    import mlflow
    from mlflow.tracking import MlflowClient

    uri, name = request.tracking_uri, request.registered_model
    mlflow.set_tracking_uri(uri)
    created = retry_transient(
        lambda: mlflow.register_model(model_uri, name, tags=dict(request.version_tags)),
        f"registering {name}",
        uri,
    )
    version = str(created.version)
    client = MlflowClient(uri)
    try:
        retry_transient(
            lambda: client.set_registered_model_alias(name, request.alias, version),
            f"setting @{request.alias} on {name} version {version}",
            uri,
        )
    except Exception as err:
        logger.error("%s version %s could not get @%s (%s); deleting it", name, version, request.alias, err)
        try:
            client.delete_model_version(name, version)
        except Exception as cleanup:  # the registry is gone: say which version to remove
            raise RegistryWriteError(
                f"{name} version {version} was created but neither aliased nor deleted ({cleanup}); "
                f"delete it by hand: {err}"
            ) from err
        raise RegistryWriteError(
            f"could not set @{request.alias} on {name} version {version}, so the version was deleted: {err}"
        ) from err
    return version


class RegistryWriteError(RuntimeError):
    """Registering the model failed; no half-registered version is left behind."""


def publish_task_model(
    model: nn.Module, flat: np.ndarray, spec: TaskSpec, task: Task, request: PublishRequest
) -> PublishedModel:
    """A task's final model as a pyfunc that needs nothing but the registry: the task file (its
    ``predict``), the whole module pickled (the federated part merged with any frozen base, so a
    silo-local pretrained file is not needed to serve) and the exchanged vector for warm starts."""
    import mlflow

    mlflow.set_tracking_uri(request.tracking_uri)
    # what the task file may import that serving must install too
    requirements = _requirements() + [name for name in ("peft", "transformers") if name in sys.modules]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = folder / TASK_FILE
        source.write_bytes(spec.source if spec.source is not None else Path(task.source).read_bytes())
        module = folder / "module.pt"
        torch.save(copy.deepcopy(model).cpu().eval(), module)
        weights = folder / WEIGHTS
        np.save(weights, flat)
        settings = folder / "task.json"
        settings.write_text(json.dumps({"kind": spec.kind, "config": dict(spec.config), "sha256": task.sha256,
                                        "name": Path(spec.module).name}))  # fmt: skip
        artifacts = {
            "task": str(source),
            "module": str(module),
            "weights": str(weights),
            "settings": str(settings),
        }
        return log_and_register(request, "task_serving.py", artifacts, requirements)

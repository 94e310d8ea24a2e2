"""The publishing silo logs the final global model to MLflow and registers it.

The model is a pyfunc that includes its preprocessing (`silo/serving.py`); its input
example is a synthetic row of federated means and modes, never a patient's record.
"""

from __future__ import annotations

import copy
import logging
import tempfile
from pathlib import Path

import torch
from torch import nn

from silo.inference import predict_frame
from silo.messages import PublishedModel, PublishRequest
from silo.preprocess import Preprocessor

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
    from mlflow.tracking import MlflowClient
    from mlflow.types.schema import AnyType, ColSpec, Schema

    mlflow.set_tracking_uri(request.tracking_uri)
    example = pre.example_row()
    output = predict_frame(copy.deepcopy(model).cpu().eval(), pre, example)
    # Any: raw columns arrive as int, float or str depending on the file; the
    # preprocessor inside the model coerces them, MLflow's int->double check would refuse.
    inputs = Schema([ColSpec(AnyType(), name) for name in pre.inputs])
    signature = ModelSignature(inputs=inputs, outputs=infer_signature(example, output).outputs)
    requirements = [
        f"torch=={torch.__version__.split('+')[0]}",
        "pandas",
        "numpy",
        f"mlflow=={mlflow.__version__}",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        program = Path(tmp) / "model.pt2"
        export_program(model, len(pre.output_names), program)
        preprocessing = Path(tmp) / "preprocessing.json"
        preprocessing.write_text(pre.to_json())
        with mlflow.start_run(run_id=request.run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(SILO_DIR / "serving.py"),
                artifacts={"program": str(program), "preprocessing": str(preprocessing)},
                code_paths=[str(SILO_DIR)],
                signature=signature,
                input_example=example,
                pip_requirements=requirements,
                registered_model_name=request.registered_model,
            )
    version = str(info.registered_model_version)
    client = MlflowClient(request.tracking_uri)
    client.set_registered_model_alias(request.registered_model, request.alias, version)
    for key, value in request.version_tags.items():
        client.set_model_version_tag(request.registered_model, version, key, value)
    logger.info("registered %s version %s as @%s", request.registered_model, version, request.alias)
    return PublishedModel(request.registered_model, version, request.alias, info.model_uri)

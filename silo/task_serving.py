"""A task's registered model as MLflow "models from code": the task's ``predict(model, data)``.

    python -c "import mlflow, numpy as np; m = mlflow.pyfunc.load_model( \
'models:/breast-ultrasound-classifier@challenger'); print(m.predict(np.zeros((2, 28, 28), np.uint8)))"

MLflow copies this file and the ``silo`` package (``code_paths``) into the model, with the
task file, the pickled module and the settings as artifacts; loading needs torch, pandas and
mlflow (and what the task file imports), not fedsilo itself nor any silo's files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.pyfunc import PythonModel

from silo.task import exec_source


class TaskModel(PythonModel):
    def load_context(self, context: Any) -> None:
        source_path = Path(context.artifacts["task"])
        settings = json.loads(Path(context.artifacts["settings"]).read_text())
        # the task's classes must resolve before the pickled module is read
        self.task = exec_source(source_path.read_bytes(), Path(settings.get("name", source_path.name)))
        self.module = torch.load(context.artifacts["module"], weights_only=False, map_location="cpu")
        self.module.eval()

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        predict = getattr(self.task, "predict", None)
        if callable(predict):
            return predict(self.module, model_input)
        return raw_outputs(self.module, model_input)


def raw_outputs(module: torch.nn.Module, data: Any) -> pd.DataFrame:
    """A task without ``predict``: the model's outputs on ``data`` (an array or a DataFrame of
    numbers) as columns ``output_0``, ``output_1``, ..."""
    array = data.to_numpy() if isinstance(data, pd.DataFrame) else np.asarray(data)
    with torch.no_grad():
        outputs = module(torch.as_tensor(array, dtype=torch.float32))
    values = outputs.detach().cpu().numpy().reshape(len(array), -1)
    return pd.DataFrame(values, columns=[f"output_{i}" for i in range(values.shape[1])])


mlflow.models.set_model(TaskModel())

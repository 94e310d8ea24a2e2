"""The registered model as MLflow "models from code": raw DataFrame in, predictions out.

    python -c "import mlflow.pyfunc as p; m = p.load_model('models:/heart-disease-classifier@challenger'); \
import pandas as pd; print(m.predict(pd.DataFrame([{'age': 60, 'sex': 1, 'cp': 4, 'trestbps': 140, \
'chol': 250, 'fbs': 0, 'restecg': 1, 'thalach': 130, 'exang': 1, 'oldpeak': 2.0, \
'slope': 2, 'ca': 1, 'thal': 7}])))"

MLflow copies this file and the ``silo`` package (``code_paths``) into the model, so
loading it needs torch, pandas and mlflow but not fedsilo itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import torch
from mlflow.pyfunc import PythonModel

from silo.inference import predict_frame
from silo.preprocess import Preprocessor


class FedsiloModel(PythonModel):
    def load_context(self, context: Any) -> None:
        self.preprocessor = Preprocessor.from_json(Path(context.artifacts["preprocessing"]).read_text())
        self.program = torch.export.load(context.artifacts["program"])
        self.module = self.program.module()

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return predict_frame(self.module, self.preprocessor, frame)


mlflow.models.set_model(FedsiloModel())

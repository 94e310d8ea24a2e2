"""Prediction from raw feature columns: shared by the registered model and its signature."""

from __future__ import annotations

import pandas as pd
import torch

from silo.preprocess import Preprocessor


@torch.no_grad()
def predict_frame(model: torch.nn.Module, pre: Preprocessor, frame: pd.DataFrame) -> pd.DataFrame:
    """``prediction`` per row (the class label), plus ``probability`` of the positive class when binary."""
    x = torch.from_numpy(pre.transform(frame))
    logits = model(x)
    if pre.binary:
        probability = torch.sigmoid(logits[:, 0]).double().numpy()
        indices = (probability >= 0.5).astype("int64")
        return pd.DataFrame(
            {"prediction": pre.labels(indices), "probability": probability}, index=frame.index
        )
    indices = logits.argmax(dim=1).numpy()
    return pd.DataFrame({"prediction": pre.labels(indices)}, index=frame.index)

"""The heart-disease tables as a task module: the file a site approves by its sha256 in the tests
of federated clusters. Data: UCI Heart Disease (Janosi, Steinbrunn, Pfisterer, Detrano, 1988),
CC BY 4.0; see pipelines/examples/heart_disease/SOURCE.md."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import TensorDataset

COLUMNS = ["age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalach", "exang", "oldpeak",
           "slope", "ca", "thal", "num"]  # fmt: skip
# Fixed scales (the Cleveland file's means and deviations), so every silo standardizes alike.
MEANS = [54.4, 0.68, 3.16, 131.7, 246.7, 0.15, 0.99, 149.6, 0.33, 1.04, 1.6, 0.67, 4.7]
SCALES = [9.0, 0.47, 0.96, 17.6, 51.8, 0.36, 0.99, 22.9, 0.47, 1.16, 0.62, 0.94, 1.94]


def dataset(ctx: Any, split: str) -> TensorDataset:
    frame = pd.read_csv(ctx.path, header=None, names=COLUMNS, na_values="?")
    x = frame[COLUMNS[:-1]].astype(float)
    x = ((x.fillna(pd.Series(MEANS, index=COLUMNS[:-1])) - MEANS) / SCALES).to_numpy(np.float32)
    y = (frame["num"] > 0).to_numpy(np.float32)
    order = np.random.default_rng(ctx.seed).permutation(len(frame))
    n_val = int(len(frame) * ctx.config["validation_fraction"])
    rows = order[:n_val] if split == "val" else order[n_val:]
    return TensorDataset(torch.from_numpy(x[rows]), torch.from_numpy(y[rows]))


def model(config: Any) -> torch.nn.Module:
    return torch.nn.Linear(len(MEANS), 1)

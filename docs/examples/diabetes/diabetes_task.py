"""Diabetes progression across three clinics: a regression task module for fedsilo.

scikit-learn's bundled diabetes data (442 patients, 10 baseline measurements, disease
progression one year later; Efron et al., "Least Angle Regression", 2004) split into three
clinics' CSV files, one per silo:

    python docs/examples/diabetes/make_clinics.py      # writes north.csv, central.csv, south.csv here
    fedsilo run docs/examples/diabetes/pipeline.toml   # R² per clinic and overall

``kind = "regression"`` supplies the loss (squared error) and the figures (MSE, MAE, R² from sums).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import TensorDataset

FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
TARGET = "progression"
# Fixed scale of the target (the published data set's mean and standard deviation), so that every
# clinic and predict() use the same numbers; never computed from one clinic's rows at run time.
TARGET_MEAN, TARGET_STD = 152.1, 77.1


def dataset(ctx: Any, split: str) -> TensorDataset:
    """This clinic's rows (``ctx.path`` is its CSV file), split by a seeded shuffle."""
    frame = pd.read_csv(ctx.path)
    missing = [c for c in [*FEATURES, TARGET] if c not in frame.columns]
    if missing:
        raise ValueError(f"{ctx.path}: missing column(s) {missing}")
    order = np.random.default_rng(ctx.seed).permutation(len(frame))
    n_val = round(float(ctx.config.get("validation_fraction", 0.2)) * len(frame))
    rows = order[:n_val] if split == "val" else order[n_val:]
    chosen = frame.iloc[np.sort(rows)]
    x = torch.tensor(chosen[FEATURES].to_numpy(), dtype=torch.float32)
    y = torch.tensor(chosen[[TARGET]].to_numpy(), dtype=torch.float32)
    return TensorDataset(x, y)


class Progression(nn.Module):
    """A small MLP on the (already scaled) measurements, its output on the target's scale."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(len(FEATURES), hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * TARGET_STD + TARGET_MEAN


def model(config: Mapping[str, Any]) -> nn.Module:
    return Progression(int(config.get("hidden", 16)))


def predict(model: nn.Module, data: Any) -> pd.DataFrame:
    """``progression`` for each row of ``data`` (a DataFrame with the ten measurement columns)."""
    frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data, columns=FEATURES)
    model.eval()
    with torch.no_grad():
        out = model(torch.tensor(frame[FEATURES].to_numpy(), dtype=torch.float32))
    return pd.DataFrame({TARGET: out[:, 0].numpy().astype(float)})

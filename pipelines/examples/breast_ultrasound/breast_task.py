"""Breast ultrasound (BreastMNIST, 28 x 28) across three hospitals: a fedsilo task module.

Each silo's ``path`` is one hospital's folder (``labels.csv`` with ``image``, ``finding`` and
``images/*.png``); the task is binary, malignant (1) against benign or normal (0), so ``kind =
"binary"`` supplies the loss (BCE with logits on one logit per image), metrics and finalize.

    fedsilo run --example breast-ultrasound

The centralized baseline it is compared against trains this same model on the pooled sites:

    .venv/bin/python benchmarks/imaging_central.py

``[task.config]`` keys: ``validation_fraction`` (0.2), ``width`` (32: channels width, 2*width,
2*width), ``augment`` (false: random horizontal flips of training images, seeded).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

SIDE = 28
# Fixed normalization: mean and standard deviation of pixel/255 over the 546 official BreastMNIST
# training images (all three sites' train_*.png), computed once and hard-coded so that every silo
# and predict() scale inputs identically; never recomputed from a silo's data at run time.
MEAN = 0.328
STD = 0.206
MALIGNANT = "malignant"
BENIGN = "benign"


def _normalize(pixels: np.ndarray) -> torch.Tensor:
    """uint8-scale pixels (N, 28, 28) -> float32 tensor (N, 1, 28, 28), normalized."""
    scaled = torch.as_tensor(np.asarray(pixels, dtype=np.float32) / 255.0)
    return ((scaled - MEAN) / STD).unsqueeze(1).contiguous()


def _read_rows(folder: Path) -> list[tuple[str, float]]:
    """``labels.csv`` of one site: (relative image path, 1.0 malignant / 0.0 benign)."""
    rows: list[tuple[str, float]] = []
    with (folder / "labels.csv").open(newline="") as fh:
        for line, record in enumerate(csv.DictReader(fh), start=2):
            finding = record["finding"].strip().lower()
            if finding not in (MALIGNANT, BENIGN):
                raise ValueError(f"{folder / 'labels.csv'} line {line}: finding {finding!r}")
            rows.append((record["image"], 1.0 if finding == MALIGNANT else 0.0))
    return rows


def split_indices(targets: Sequence[float], seed: int, fraction: float) -> tuple[list[int], list[int]]:
    """Deterministic stratified split: (train, val) row indices, each row in exactly one."""
    rng = np.random.default_rng(seed)
    train: list[int] = []
    val: list[int] = []
    labels = np.asarray(targets)
    for value in (0.0, 1.0):
        members = np.flatnonzero(labels == value)
        members = members[rng.permutation(len(members))]
        n_val = round(len(members) * fraction)
        val.extend(int(i) for i in members[:n_val])
        train.extend(int(i) for i in members[n_val:])
    return sorted(train), sorted(val)


class UltrasoundImages(Dataset):
    """Preloaded images of one split: items ``(float32 (1, 28, 28), float32 (1,))``."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, flip_seed: int | None = None):
        self.images = images
        self.targets = targets
        self._flips = None if flip_seed is None else torch.Generator().manual_seed(flip_seed)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        if self._flips is not None and torch.rand((), generator=self._flips) < 0.5:
            image = image.flip(-1)
        return image, self.targets[index]


def dataset(ctx: Any, split: str) -> UltrasoundImages:
    """One split of this silo's images: a seeded stratified split of its ``labels.csv`` rows."""
    if split not in ("train", "val"):
        raise ValueError(f"split {split!r}: use 'train' or 'val'")
    folder = Path(ctx.path)
    config: Mapping[str, Any] = ctx.config or {}
    fraction = float(config.get("validation_fraction", 0.2))
    rows = _read_rows(folder)
    train, val = split_indices([target for _, target in rows], int(ctx.seed), fraction)
    chosen = [rows[i] for i in (train if split == "train" else val)]
    pixels = np.zeros((len(chosen), SIDE, SIDE), dtype=np.uint8)
    for i, (name, _) in enumerate(chosen):
        with Image.open(folder / name) as image:
            array = np.asarray(image.convert("L"))
        if array.shape != (SIDE, SIDE):
            raise ValueError(f"{folder / name}: shape {array.shape}, expected ({SIDE}, {SIDE})")
        pixels[i] = array
    targets = torch.tensor([[target] for _, target in chosen], dtype=torch.float32).reshape(-1, 1)
    augment = split == "train" and bool(config.get("augment", False))
    return UltrasoundImages(_normalize(pixels), targets, flip_seed=int(ctx.seed) if augment else None)


def _block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.ReLU()]


def model(config: Mapping[str, Any]) -> nn.Module:
    """Three conv blocks (3x3 conv, GroupNorm, ReLU; max-pooled twice, then globally averaged) and a
    linear head with one logit: 56,129 parameters at the default width 32."""
    width = int((config or {}).get("width", 32))
    return nn.Sequential(
        *_block(1, width),
        nn.MaxPool2d(2),  # 28 -> 14
        *_block(width, 2 * width),
        nn.MaxPool2d(2),  # 14 -> 7
        *_block(2 * width, 2 * width),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, 1),
    )


def _as_pixels(data: Any) -> np.ndarray:
    """Images as uint8-scale pixels (N, 28, 28) from an array, a DataFrame of 784 columns or a list."""
    array = data.to_numpy() if isinstance(data, pd.DataFrame) else np.asarray(data)
    if array.size % (SIDE * SIDE):
        raise ValueError(f"predict(): {array.shape} is not a batch of {SIDE} x {SIDE} images")
    return array.reshape(-1, SIDE, SIDE)


def predict(model: nn.Module, data: Any) -> pd.DataFrame:
    """``prediction`` (malignant / benign at probability 0.5) and ``probability`` of malignant."""
    inputs = _normalize(_as_pixels(data))
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    model.eval()
    with torch.no_grad():
        logits = model(inputs.to(device)).reshape(-1)
        probability = torch.sigmoid(logits).double().cpu().numpy()
    return pd.DataFrame(
        {
            "prediction": np.where(probability >= 0.5, MALIGNANT, BENIGN),
            "probability": probability.astype(float),
        }
    )

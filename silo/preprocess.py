"""Federated preprocessing: impute, standardize and one-hot without pooling rows.

Means, variances and category modes come from two federated sums (encrypted when HE
is on): pass 1 adds per-column counts, sums and category counts; pass 2 adds squared
deviations from the global mean (two passes avoid E[x^2] - E[x]^2 cancellation).
The resulting `Preprocessor` is identical in every silo and ships inside the
registered model, so serving applies exactly the training transform.

This module imports only numpy and pandas: MLflow loads it to serve the model.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from silo.data import DataError, canonical


@dataclass(frozen=True)
class AgreedSchema:
    """The shape every silo agreed on: input columns, category levels, classes."""

    features: tuple[str, ...]
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    levels: tuple[tuple[str, ...], ...]  # aligned with `categorical`
    classes: tuple[str, ...]

    @property
    def n_inputs(self) -> int:
        return len(self.numeric) + sum(len(lv) for lv in self.levels)

    @property
    def n_outputs(self) -> int:
        return 1 if len(self.classes) == 2 else len(self.classes)


def apply_missing_policy(frame: pd.DataFrame, schema: AgreedSchema, policy: str) -> pd.DataFrame:
    if policy == "drop":
        return frame.dropna(subset=list(schema.features)).reset_index(drop=True)
    return frame


def _category_counts(frame: pd.DataFrame, schema: AgreedSchema) -> list[float]:
    counts: list[float] = []
    for name, levels in zip(schema.categorical, schema.levels, strict=True):
        seen = frame[name].dropna().map(canonical).value_counts()
        counts.extend(float(seen.get(level, 0)) for level in levels)
    return counts


def local_sums(frame: pd.DataFrame, schema: AgreedSchema) -> np.ndarray:
    """Pass 1: [non-missing count per numeric column, sum per numeric column, level counts]."""
    values = frame[list(schema.numeric)].to_numpy(dtype=np.float64)
    counts = np.sum(~np.isnan(values), axis=0)
    sums = np.nansum(values, axis=0)
    return np.concatenate([counts, sums, _category_counts(frame, schema)]).astype(np.float64)


def global_means(schema: AgreedSchema, total: np.ndarray) -> np.ndarray:
    k = len(schema.numeric)
    counts = np.rint(total[:k])
    empty = [name for name, c in zip(schema.numeric, counts, strict=True) if c < 1]
    if empty:
        raise DataError(f"no silo has a single value for column(s) {empty}")
    return total[k : 2 * k] / counts


def local_squares(frame: pd.DataFrame, schema: AgreedSchema, means: np.ndarray) -> np.ndarray:
    """Pass 2: sum of squared deviations from the global mean per numeric column."""
    values = frame[list(schema.numeric)].to_numpy(dtype=np.float64)
    return np.nansum((values - means) ** 2, axis=0).astype(np.float64)


@dataclass(frozen=True)
class Preprocessor:
    """Raw feature columns -> model inputs, and class labels <-> indices."""

    target: str
    inputs: tuple[str, ...]  # raw feature columns, in the files' order
    numeric: tuple[str, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]
    categorical: tuple[str, ...]
    levels: tuple[tuple[str, ...], ...]
    modes: tuple[str, ...]  # imputed value per categorical column
    classes: tuple[str, ...]
    positive: tuple[str, ...] | None  # target values mapped to class "1"
    na_values: tuple[str, ...] = ()  # strings that mean "missing" in raw input, as in training

    @classmethod
    def from_sums(
        cls,
        schema: AgreedSchema,
        target: str,
        positive: tuple[str, ...] | None,
        sums: np.ndarray,
        squares: np.ndarray,
        na_values: tuple[str, ...] = (),
    ) -> Preprocessor:
        k = len(schema.numeric)
        counts = np.rint(sums[:k])
        means = global_means(schema, sums)
        stds = np.sqrt(np.maximum(squares, 0.0) / counts)
        stds = np.where(stds > 1e-12, stds, 1.0)
        modes: list[str] = []
        offset = 2 * k
        for name, levels in zip(schema.categorical, schema.levels, strict=True):
            level_counts = np.rint(sums[offset : offset + len(levels)])
            if level_counts.sum() < 1:
                raise DataError(f"no silo has a single value for categorical column {name!r}")
            modes.append(levels[int(np.argmax(level_counts))])
            offset += len(levels)
        return cls(
            target=target,
            inputs=schema.features,
            numeric=schema.numeric,
            means=tuple(float(m) for m in means),
            stds=tuple(float(s) for s in stds),
            categorical=schema.categorical,
            levels=schema.levels,
            modes=tuple(modes),
            classes=schema.classes,
            positive=positive,
            na_values=na_values,
        )

    @property
    def output_names(self) -> list[str]:
        names = list(self.numeric)
        for name, levels in zip(self.categorical, self.levels, strict=True):
            names.extend(f"{name}={level}" for level in levels)
        return names

    @property
    def binary(self) -> bool:
        return len(self.classes) == 2

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        absent = [c for c in self.inputs if c not in frame.columns]
        if absent:
            raise DataError(f"input is missing column(s) {absent}")
        parts: list[np.ndarray] = []
        if self.numeric:
            values = np.stack([self._numeric(frame[name]) for name in self.numeric], axis=1)
            means = np.asarray(self.means)
            values = np.where(np.isnan(values), means, values)
            parts.append((values - means) / np.asarray(self.stds))
        for name, levels, mode in zip(self.categorical, self.levels, self.modes, strict=True):
            column = frame[name].map(lambda v, m=mode: m if _is_missing(v, self.na_values) else canonical(v))
            parts.append(np.stack([(column == lv).to_numpy(np.float64) for lv in levels], axis=1))
        return np.concatenate(parts, axis=1).astype(np.float32) if parts else np.zeros((len(frame), 0))

    def _numeric(self, column: pd.Series) -> np.ndarray:
        """Float values with NaN for missing; a value that is neither is an error."""
        text = column.astype(str).str.strip()
        missing = column.isna() | text.isin(self.na_values) | (text == "")
        coerced = pd.to_numeric(column.where(~missing), errors="coerce")
        bad = ~missing & coerced.isna()
        if bad.any():
            raise DataError(f"column {column.name!r} has non-numeric value {column[bad].iloc[0]!r}")
        return coerced.to_numpy(dtype=np.float64)

    def encode_target(self, target: pd.Series) -> np.ndarray:
        canon = target.map(canonical)
        if self.positive is not None:
            positive = {canonical(v) for v in self.positive}
            canon = canon.isin(positive).astype(int).astype(str)
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array(canon.map(index).to_numpy(dtype=np.int64), copy=True)  # writable, for torch

    def labels(self, indices: np.ndarray) -> list[object]:
        """Class labels for predicted indices: ints where every class is an integer."""
        as_int = all(c.lstrip("-").isdigit() for c in self.classes)
        return [int(self.classes[i]) if as_int else self.classes[i] for i in indices]

    def example_row(self) -> pd.DataFrame:
        """A synthetic input row (federated means and modes): never a real record."""
        row: dict[str, object] = {n: m for n, m in zip(self.numeric, self.means, strict=True)}
        for name, mode in zip(self.categorical, self.modes, strict=True):
            row[name] = _as_number(mode)
        return pd.DataFrame([row], columns=list(self.inputs))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Preprocessor:
        raw = json.loads(text)
        positive = raw["positive"]
        return cls(
            target=raw["target"],
            inputs=tuple(raw["inputs"]),
            numeric=tuple(raw["numeric"]),
            means=tuple(raw["means"]),
            stds=tuple(raw["stds"]),
            categorical=tuple(raw["categorical"]),
            levels=tuple(tuple(lv) for lv in raw["levels"]),
            modes=tuple(raw["modes"]),
            classes=tuple(raw["classes"]),
            positive=tuple(positive) if positive is not None else None,
            na_values=tuple(raw.get("na_values", ())),
        )


def _is_missing(value: object, na_values: tuple[str, ...]) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() in na_values or value.strip() == ""
    if isinstance(value, float):
        return math.isnan(value)
    return bool(pd.isna(value))


def _as_number(text: str) -> object:
    try:
        return float(text)
    except ValueError:
        return text

"""Load one silo's table and check it against the shared schema before any training.

Every problem is reported with the silo and column at fault, and all problems of a
file are reported together:

    python -c "from silo.data import inspect_table; from silo.config import DataSpec; \
print(inspect_table('cleveland', 'pipelines/examples/heart_disease/processed.cleveland.data', \
DataSpec(target='num', columns=('age','sex','cp','trestbps','chol','fbs','restecg','thalach',\
'exang','oldpeak','slope','ca','thal','num'))).errors)"
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from silo.config import DataSpec
from silo.exchange import Manifest

logger = logging.getLogger(__name__)

PARQUET_SUFFIXES = {".parquet", ".pq"}


class DataError(ValueError):
    """A silo's data cannot be used; the message names the silo and the column."""


def canonical(value: object) -> str:
    """One spelling per category or class: 3, 3.0 and "3" are all "3"."""
    if isinstance(value, bool | np.bool_):
        return str(int(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        f = float(value)
        return str(int(f)) if math.isfinite(f) and f.is_integer() else repr(f)
    text = str(value).strip()
    try:
        return canonical(float(text))
    except ValueError:
        return text


@dataclass(frozen=True)
class SiloDescription:
    """What a silo tells the orchestrator about its data: shape and codes, never rows."""

    name: str
    rows: int
    columns: tuple[str, ...]
    features: tuple[str, ...]
    numeric: tuple[str, ...]
    levels: dict[str, tuple[str, ...]]  # categorical column -> levels seen here
    classes: tuple[str, ...]  # target values seen here (after `positive`, if set)
    missing: dict[str, int]  # column -> missing cells
    errors: tuple[str, ...] = ()
    # What the silo can train with but should know of (a single class here): shown, never refused
    warnings: tuple[str, ...] = ()
    # A task pipeline: what the silo's model exchanges (checked equal across silos before round 1)
    # and the sha256 of the task file it runs
    manifest: Manifest | None = None
    task_sha256: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors


def read_table(silo: str, path: str | Path, spec: DataSpec) -> pd.DataFrame:
    """Read a CSV or Parquet file as it is on this node; raise `DataError` naming the silo."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"silo {silo!r}: data file {str(path)!r} does not exist on this node")
    try:
        if path.suffix.lower() in PARQUET_SUFFIXES:
            frame = pd.read_parquet(path)
            frame = frame.replace(list(spec.na_values), np.nan)
        else:
            frame = pd.read_csv(
                path,
                header=None if spec.columns else "infer",
                names=list(spec.columns) if spec.columns else None,
                na_values=list(spec.na_values),
                keep_default_na=False,
                skipinitialspace=True,
            )
    except pd.errors.EmptyDataError as err:
        raise DataError(f"silo {silo!r}: data file {str(path)!r} is empty") from err
    except Exception as err:  # pandas/pyarrow raise many types for unreadable files
        raise DataError(f"silo {silo!r}: cannot read {str(path)!r}: {err}") from err
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def resolve_features(spec: DataSpec, columns: list[str]) -> tuple[str, ...]:
    if spec.features is not None:
        return spec.features
    return tuple(c for c in columns if c != spec.target and c not in spec.ignore)


def _first_bad(original: pd.Series, coerced: pd.Series) -> tuple[int, object] | None:
    bad = original.notna() & coerced.isna()
    if not bad.any():
        return None
    index = int(np.flatnonzero(bad.to_numpy())[0])
    return index, original.iloc[index]


def labels(spec: DataSpec, target: pd.Series) -> pd.Series:
    """Canonical class labels; with `positive` set, "1" for positive and "0" otherwise."""
    canon = target.map(canonical)
    if spec.positive is None:
        return canon
    positive = {canonical(v) for v in spec.positive}
    return canon.isin(positive).astype(int).astype(str)


def inspect_table(silo: str, path: str | Path, spec: DataSpec) -> SiloDescription:
    """Read and check one silo's file; problems come back in ``errors``, not raised."""
    try:
        frame = read_table(silo, path, spec)
    except DataError as err:
        return SiloDescription(silo, 0, (), (), (), {}, (), {}, (str(err),))
    return describe_frame(silo, frame, spec)


def describe_frame(silo: str, frame: pd.DataFrame, spec: DataSpec) -> SiloDescription:
    errors: list[str] = []
    columns = list(frame.columns)
    header_rows = 0 if spec.columns else 1
    features = resolve_features(spec, columns)
    expected = set(features) | {spec.target}
    if len(set(columns)) != len(columns):
        dupes = sorted({c for c in columns if columns.count(c) > 1})
        errors.append(f"silo {silo!r}: duplicate columns {dupes}")
    missing_cols = [c for c in [spec.target, *features] if c not in columns]
    if missing_cols:
        hint = ""
        looks_like_data = [_is_number(c) or c.split(".")[0] in spec.na_values for c in columns]
        if not spec.columns and sum(looks_like_data) * 2 > len(columns):
            hint = " (the file seems to have no header row: name its columns with [data] columns)"
        errors.append(f"silo {silo!r}: missing column(s) {missing_cols}{hint}")
    if spec.columns and len(frame) and [str(v).strip() for v in frame.iloc[0]] == list(spec.columns):
        errors.append(
            f"silo {silo!r}: the file's first line repeats the column names; it has a header row, "
            "so leave out [data] columns"
        )
        return SiloDescription(silo, len(frame), tuple(columns), features, (), {}, (), {}, tuple(errors))
    if spec.features is not None:
        extra = [c for c in columns if c not in expected and c not in spec.ignore]
        if extra:
            errors.append(
                f"silo {silo!r}: extra column(s) {extra} not in [data] features "
                "(add them to features or to [data] ignore)"
            )
    for name in spec.categorical:
        if name not in features:
            errors.append(f"silo {silo!r}: categorical column {name!r} is not a feature")
    if frame.empty:
        errors.append(f"silo {silo!r}: data file has no rows")
    if errors:
        return SiloDescription(silo, len(frame), tuple(columns), features, (), {}, (), {}, tuple(errors))

    numeric = tuple(c for c in features if c not in spec.categorical)
    for name in numeric:
        column = frame[name]
        coerced = pd.to_numeric(column, errors="coerce")
        bad = _first_bad(column, coerced)
        if bad is not None:
            row, value = bad
            errors.append(
                f"silo {silo!r}: column {name!r} has non-numeric value {value!r} "
                f"(line {row + 1 + header_rows}); list it in [data] categorical or fix the file"
            )

    target = frame[spec.target]
    if target.isna().all():
        errors.append(f"silo {silo!r}: target column {spec.target!r} has no values")
    classes = tuple(sorted(set(labels(spec, target[target.notna()]))))
    warnings = [single_class_warning(silo, spec.target, classes[0])] if len(classes) == 1 else []
    levels = {name: tuple(sorted({canonical(v) for v in frame[name].dropna()})) for name in spec.categorical}
    missing = {c: int(frame[c].isna().sum()) for c in [*features, spec.target] if frame[c].isna().any()}
    return SiloDescription(
        silo, len(frame), tuple(columns), features, numeric, levels, classes, missing, tuple(errors),
        tuple(warnings),
    )  # fmt: skip


def single_class_warning(silo: str, target: str, cls: str) -> str:
    """A silo whose rows hold one class trains and contributes (the classes the model predicts
    are the union over all silos, checked by `orchestrator.schema.agree`); only its own
    figures that need two classes, such as ROC AUC, are undefined."""
    return f"silo {silo!r}: a single class {cls!r} in {target!r}; it trains, its own AUC is undefined"


def prepare_frame(
    silo: str, frame: pd.DataFrame, description: SiloDescription, spec: DataSpec
) -> pd.DataFrame:
    """A checked table, typed: rows without a target dropped, numeric columns as float64."""
    if description.errors:
        raise DataError("; ".join(description.errors))
    dropped = int(frame[spec.target].isna().sum())
    if dropped:
        logger.warning("silo %s: dropping %d rows without a target value", silo, dropped)
        frame = frame[frame[spec.target].notna()]
    frame = frame.copy()
    for name in description.numeric:
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(np.float64)
    return frame.reset_index(drop=True)


def split_indices(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/validation split with a fixed seed; every class keeps a training row."""
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    val: list[np.ndarray] = []
    for cls in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == cls))
        n_val = min(int(round(fraction * idx.size)), idx.size - 1)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))

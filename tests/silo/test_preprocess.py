"""Federated statistics equal pooled statistics; the transform is what serving applies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from orchestrator.schema import agree
from silo.config import DataSpec
from silo.data import DataError, describe_frame, prepare_frame
from silo.preprocess import Preprocessor, global_means, local_squares, local_sums
from tests.conftest import synthetic_silo

SPEC = DataSpec(target="y", categorical=("color",))


def _silos() -> list[pd.DataFrame]:
    frames = [synthetic_silo(n, seed=s) for s, n in enumerate([40, 25, 60])]
    frames[1].loc[[0, 3], "x1"] = np.nan
    frames[2].loc[[1], "color"] = np.nan
    return frames


def _federated(frames: list[pd.DataFrame]) -> Preprocessor:
    descriptions = [describe_frame(f"s{i}", f, SPEC) for i, f in enumerate(frames)]
    schema = agree(descriptions)
    typed = [prepare_frame(d.name, f, d, SPEC) for d, f in zip(descriptions, frames, strict=True)]
    sums = np.sum([local_sums(f, schema) for f in typed], axis=0)
    means = global_means(schema, sums)
    squares = np.sum([local_squares(f, schema, means) for f in typed], axis=0)
    return Preprocessor.from_sums(schema, "y", None, sums, squares)


def test_federated_mean_and_std_equal_the_pooled_ones() -> None:
    # Prepare
    frames = _silos()
    pooled = pd.concat(frames)
    # Execute
    pre = _federated(frames)
    # Assert: population statistics over the non-missing values of all silos
    np.testing.assert_allclose(pre.means, pooled[["x1", "x2"]].mean().to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(pre.stds, pooled[["x1", "x2"]].std(ddof=0).to_numpy(), rtol=1e-12)
    assert pre.modes == (pooled["color"].mode()[0],)


def test_transform_imputes_standardizes_and_one_hots() -> None:
    pre = _federated(_silos())
    frame = pd.DataFrame({"x1": [np.nan, pre.means[0]], "x2": [pre.means[1] + pre.stds[1], 0.0],
                          "color": [None, "green"]})  # fmt: skip
    x = pre.transform(frame)
    assert pre.output_names == ["x1", "x2", "color=blue", "color=green", "color=red"]
    assert x.shape == (2, 5) and x.dtype == np.float32
    assert x[0, 0] == pytest.approx(0.0) and x[0, 1] == pytest.approx(1.0)
    assert x[0, 2:].sum() == 1.0 and x[0, 2 + pre.levels[0].index(pre.modes[0])] == 1.0
    assert list(x[1, 2:]) == [0.0, 1.0, 0.0]


def test_unknown_category_is_all_zeros() -> None:
    pre = _federated(_silos())
    x = pre.transform(pd.DataFrame({"x1": [1.0], "x2": [1.0], "color": ["purple"]}))
    assert list(x[0, 2:]) == [0.0, 0.0, 0.0]


def test_non_numeric_value_at_serving_is_an_error() -> None:
    pre = _federated(_silos())
    with pytest.raises(DataError, match="column 'x1' has non-numeric value 'abc'"):
        pre.transform(pd.DataFrame({"x1": ["abc"], "x2": [1.0], "color": ["red"]}))


def test_missing_input_column_is_an_error() -> None:
    pre = _federated(_silos())
    with pytest.raises(DataError, match=r"missing column\(s\) \['color'\]"):
        pre.transform(pd.DataFrame({"x1": [1.0], "x2": [1.0]}))


def test_na_values_count_as_missing_at_serving() -> None:
    pre = Preprocessor(
        target="y", inputs=("a", "k"), numeric=("a",), means=(2.0,), stds=(1.0,), categorical=("k",),
        levels=(("x", "y"),), modes=("y",), classes=("0", "1"), positive=None, na_values=("?",),
    )  # fmt: skip
    x = pre.transform(pd.DataFrame({"a": ["?"], "k": ["?"]}))
    assert list(x[0]) == [0.0, 0.0, 1.0]


def test_json_round_trip() -> None:
    pre = _federated(_silos())
    assert Preprocessor.from_json(pre.to_json()) == pre


def test_target_encoding_with_positive_classes() -> None:
    pre = Preprocessor(
        target="num", inputs=(), numeric=(), means=(), stds=(), categorical=(), levels=(), modes=(),
        classes=("0", "1"), positive=("1", "2", "3", "4"),
    )  # fmt: skip
    assert list(pre.encode_target(pd.Series([0, 1, 2.0, "4", 0]))) == [0, 1, 1, 1, 0]
    assert pre.labels(np.array([1, 0])) == [1, 0]


def test_a_column_no_silo_has_values_for_is_named() -> None:
    frames = _silos()
    for frame in frames:
        frame["x2"] = np.nan
    with pytest.raises(DataError, match=r"no silo has a single value for column\(s\) \['x2'\]"):
        _federated(frames)

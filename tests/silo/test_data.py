"""A silo's file is checked before any training; every error names the silo and the column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from silo.config import DataSpec
from silo.data import canonical, inspect_table, split_indices
from tests.conftest import EXAMPLE_DIR, HEART_COLUMNS, synthetic_silo

SPEC = DataSpec(target="y", categorical=("color",))


def test_a_good_table_has_no_errors(write_table) -> None:
    path = write_table("good", synthetic_silo(50, seed=1))
    d = inspect_table("a", path, SPEC)
    assert d.errors == ()
    assert d.rows == 50
    assert d.features == ("x1", "x2", "color")
    assert d.numeric == ("x1", "x2")
    assert d.levels == {"color": ("blue", "green", "red")}
    assert d.classes == ("0", "1")


def test_parquet_is_read_like_csv(write_table) -> None:
    path = write_table("good", synthetic_silo(30, seed=1), parquet=True)
    assert inspect_table("a", path, SPEC).errors == ()


def test_missing_file_names_silo_and_path(tmp_path: Path) -> None:
    d = inspect_table("hospital-x", tmp_path / "nope.csv", SPEC)
    assert d.errors == (
        f"silo 'hospital-x': data file '{tmp_path / 'nope.csv'}' does not exist on this node",
    )


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    (error,) = inspect_table("b", path, SPEC).errors
    assert "silo 'b'" in error and "is empty" in error


def test_header_only_file_has_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "header.csv"
    path.write_text("x1,x2,color,y\n")
    assert "silo 'b': data file has no rows" in inspect_table("b", path, SPEC).errors


def test_missing_and_extra_columns(write_table) -> None:
    frame = synthetic_silo(20, seed=2).drop(columns=["x2"]).assign(patient_id=range(20))
    path = write_table("cols", frame)
    spec = DataSpec(target="y", features=("x1", "x2", "color"), categorical=("color",))
    errors = inspect_table("c", path, spec).errors
    assert "silo 'c': missing column(s) ['x2']" in errors
    assert any("silo 'c': extra column(s) ['patient_id']" in e for e in errors)


def test_ignored_columns_are_not_extra(write_table) -> None:
    frame = synthetic_silo(20, seed=2).assign(patient_id=range(20))
    spec = DataSpec(
        target="y", features=("x1", "x2", "color"), categorical=("color",), ignore=("patient_id",)
    )
    assert inspect_table("c", write_table("cols", frame), spec).errors == ()


def test_non_numeric_value_names_column_value_and_line(write_table) -> None:
    frame = synthetic_silo(20, seed=3)
    frame["x1"] = frame["x1"].astype(object)
    frame.loc[4, "x1"] = "abc"
    (error,) = inspect_table("d", write_table("bad", frame), SPEC).errors
    assert error.startswith("silo 'd': column 'x1' has non-numeric value 'abc' (line 6)")


def test_a_single_class_target_is_a_warning_not_an_error(write_table) -> None:
    frame = synthetic_silo(20, seed=4).assign(y=1)
    description = inspect_table("e", write_table("one", frame), SPEC)
    assert description.ok and description.classes == ("1",)
    (warning,) = description.warnings
    assert warning == "silo 'e': a single class '1' in 'y'; it trains, its own AUC is undefined"


def test_a_single_class_silo_keeps_its_class_in_validation() -> None:
    y = np.array(["1"] * 30)
    train, val = split_indices(y, 0.2, seed=0)
    assert len(train) == 24 and len(val) == 6 and set(train) | set(val) == set(range(30))


def test_a_tiny_silo_splits_what_it_has() -> None:
    # fewer validation rows than classes: the minority class stays in training
    train, val = split_indices(np.array(["0"] * 19 + ["1"]), 0.2, seed=0)
    assert len(val) == 4 and 19 in train
    train, val = split_indices(np.array(["1"]), 0.2, seed=0)  # one row: it trains, nothing validates
    assert list(train) == [0] and len(val) == 0


def test_missing_target_column(write_table) -> None:
    frame = synthetic_silo(20, seed=4).drop(columns=["y"])
    errors = inspect_table("f", write_table("noy", frame), SPEC).errors
    assert "silo 'f': missing column(s) ['y']" in errors


def test_categorical_must_be_a_feature(write_table) -> None:
    spec = DataSpec(target="y", categorical=("colour",))
    errors = inspect_table("g", write_table("g", synthetic_silo(20, seed=5)), spec).errors
    assert "silo 'g': categorical column 'colour' is not a feature" in errors


def test_raw_uci_file_reads_with_columns_and_question_marks() -> None:
    spec = DataSpec(
        target="num", columns=tuple(HEART_COLUMNS), categorical=("cp", "thal"), positive=("1", "2", "3", "4"),
        na_values=("?",),
    )  # fmt: skip
    d = inspect_table("hungary", EXAMPLE_DIR / "processed.hungarian.data", spec)
    assert d.errors == ()
    assert d.rows == 294
    assert d.missing["ca"] == 291
    assert d.classes == ("0", "1")
    assert d.levels["thal"] == ("3", "6", "7")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3, "3"), (3.0, "3"), ("3", "3"), (" 3.0 ", "3"), (2.5, "2.5"), ("red", "red"), (True, "1")],
)
def test_canonical_spelling(value: object, expected: str) -> None:
    assert canonical(value) == expected


def test_split_is_stratified_fixed_and_disjoint() -> None:
    y = np.array([0] * 30 + [1] * 10)
    train, val = split_indices(y, 0.2, seed=0)
    again = split_indices(y, 0.2, seed=0)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])
    assert set(train).isdisjoint(val) and len(train) + len(val) == 40
    assert (y[val] == 1).sum() == 2 and (y[val] == 0).sum() == 6


def test_split_keeps_a_training_row_of_every_class() -> None:
    y = np.array([0] * 10 + [1])
    train, _ = split_indices(y, 0.5, seed=0)
    assert 1 in y[train]


def test_frames_with_strings_in_categorical_are_fine(write_table) -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "kind": ["x", "y", "x", "?"], "y": [0, 1, 0, 1]})
    spec = DataSpec(target="y", categorical=("kind",))
    d = inspect_table("h", write_table("h", frame), spec)
    assert d.errors == () and d.levels == {"kind": ("x", "y")} and d.missing == {"kind": 1}


def test_a_headerless_file_without_columns_gets_a_hint() -> None:
    spec = DataSpec(target="num")
    (error,) = inspect_table("va", EXAMPLE_DIR / "processed.va.data", spec).errors
    assert "missing column(s) ['num']" in error
    assert "no header row: name its columns with [data] columns" in error


def test_a_header_row_with_columns_set_is_named(write_table) -> None:
    frame = synthetic_silo(10, seed=1)
    path = write_table("with-header", frame)
    spec = DataSpec(target="y", columns=("x1", "x2", "color", "y"), categorical=("color",))
    (error,) = inspect_table("a", path, spec).errors
    assert error == (
        "silo 'a': the file's first line repeats the column names; it has a header row, "
        "so leave out [data] columns"
    )

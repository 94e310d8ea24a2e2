"""One agreed schema, or every disagreement named by silo."""

from __future__ import annotations

import pytest

from orchestrator.errors import SchemaMismatch
from orchestrator.schema import agree
from silo.data import SiloDescription


def _desc(
    name: str,
    features: tuple[str, ...],
    levels: tuple[str, ...] = ("a",),
    classes: tuple[str, ...] = ("0", "1"),
    errors: tuple[str, ...] = (),
) -> SiloDescription:
    numeric = tuple(f for f in features if f != "k")
    return SiloDescription(name, 10, (*features, "y"), features, numeric, {"k": levels}, classes, {}, errors)


def test_levels_and_classes_are_the_union_in_numeric_order() -> None:
    schema = agree([_desc("a", ("x", "k"), ("10", "2")), _desc("b", ("x", "k"), ("3",), ("2", "10"))])
    assert schema.features == ("x", "k")
    assert schema.levels == (("2", "3", "10"),)
    assert schema.classes == ("0", "1", "2", "10")
    assert schema.n_inputs == 1 + 3 and schema.n_outputs == 4


def test_the_silo_whose_columns_differ_is_named() -> None:
    with pytest.raises(SchemaMismatch) as caught:
        agree([_desc("a", ("x", "k")), _desc("b", ("x", "k")), _desc("odd", ("x", "z", "k"))])
    assert caught.value.problems == ["silo 'odd': has column(s) ['z'] that the other silos lack"]


def test_a_silo_lacking_a_column_is_named() -> None:
    with pytest.raises(SchemaMismatch, match=r"silo 'c': lacks column\(s\) \['w'\]"):
        agree([_desc("a", ("x", "w", "k")), _desc("b", ("x", "w", "k")), _desc("c", ("x", "k"))])


def test_every_silos_errors_are_reported_together() -> None:
    with pytest.raises(SchemaMismatch) as caught:
        agree([_desc("a", ("x",), errors=("silo 'a': bad",)), _desc("b", ("x",), errors=("silo 'b': bad",))])
    assert caught.value.problems == ["silo 'a': bad", "silo 'b': bad"]


def test_a_single_class_across_all_silos_is_refused() -> None:
    with pytest.raises(SchemaMismatch, match="single class"):
        agree([_desc("a", ("x", "k"), classes=("1",)), _desc("b", ("x", "k"), classes=("1",))])


def test_a_single_class_silo_joins_the_union_of_classes() -> None:
    schema = agree(
        [_desc("all-positive", ("x", "k"), classes=("1",)), _desc("b", ("x", "k"), classes=("0",))]
    )
    assert schema.classes == ("0", "1") and schema.n_outputs == 1

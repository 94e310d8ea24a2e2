"""Data versions: a hash and a row count of the rows a silo uses, never the rows."""

from __future__ import annotations

import pandas as pd

from silo.fingerprint import DataVersion, fingerprint
from tests.conftest import synthetic_silo

COLUMNS = ("x1", "x2", "color", "y")


def test_the_same_rows_give_the_same_version_whatever_the_column_order() -> None:
    frame = synthetic_silo(50, seed=1)
    shuffled = frame[["y", "color", "x2", "x1"]]
    assert fingerprint(frame, COLUMNS) == fingerprint(shuffled, COLUMNS)
    assert fingerprint(frame, COLUMNS).rows == 50


def test_a_changed_added_or_removed_row_changes_the_hash() -> None:
    frame = synthetic_silo(50, seed=1)
    base = fingerprint(frame, COLUMNS).sha256
    changed = frame.copy()
    changed.loc[7, "x1"] += 1e-9
    assert fingerprint(changed, COLUMNS).sha256 != base
    assert fingerprint(frame.iloc[:-1], COLUMNS).sha256 != base
    longer = pd.concat([frame, frame.iloc[:1]], ignore_index=True)
    assert fingerprint(longer, COLUMNS).sha256 != base


def test_the_tag_round_trips() -> None:
    version = DataVersion("ab" * 32, 303)
    assert DataVersion.from_tag(version.tag()) == version
    assert DataVersion.from_tag("not a version") is None

"""A data version: a content hash and row count of the rows a silo trained on, never the rows.

    python -c "import pandas as pd; from silo.fingerprint import fingerprint; \
print(fingerprint(pd.DataFrame({'a': [1.0, 2.0], 'y': [0, 1]}), ('a', 'y')))"

The hash is SHA-256 over the used columns (features and target, in that order) of the rows
left after the missing-value policy, written as CSV with full-precision floats: the same
rows give the same hash whatever the file format or column order, and a changed, added or
removed row changes it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class DataVersion:
    sha256: str
    rows: int

    def tag(self) -> str:
        """The registry tag value (``fedsilo.data.<silo>``)."""
        return f"sha256:{self.sha256};rows:{self.rows}"

    @classmethod
    def from_tag(cls, value: str) -> DataVersion | None:
        parts = dict(p.split(":", 1) for p in value.split(";") if ":" in p)
        if "sha256" not in parts or not parts.get("rows", "").isdigit():
            return None
        return cls(parts["sha256"], int(parts["rows"]))


def fingerprint(frame: pd.DataFrame, columns: tuple[str, ...]) -> DataVersion:
    text = frame[list(columns)].to_csv(index=False, lineterminator="\n", na_rep="", float_format="%.17g")
    return DataVersion(hashlib.sha256(text.encode()).hexdigest(), len(frame))

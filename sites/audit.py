"""The site's audit log: one JSON line per request the coordinator forwarded, appended and
fsync'ed before the answer leaves the site. Names and counts only: never a row, a metric's
value or a payload's bytes.

fedsilo site audit --site SITE.toml [--run RUN_ID] [--json]
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from silo.data import SiloDescription
from silo.messages import Evaluation, FitRes, SiloReady
from sites.policy import metric_names

logger = logging.getLogger(__name__)

OUTCOMES = ("served", "refused", "failed")
OUTCOME_STYLE = {"served": "green", "refused": "red", "failed": "yellow"}


def utc_now() -> str:
    """The time an entry is written: ISO 8601, UTC."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class AuditEntry:
    time: str  # ISO 8601, UTC
    site: str
    coordinator: str  # the coordinator certificate's sha256 fingerprint
    run_id: str
    round: int | None
    pipeline: str
    pipeline_sha256: str
    task: str
    method: str  # the silo method asked for
    outcome: str  # one of OUTCOMES
    rule: str | None  # the [policy] key that refused
    detail: str
    rows_read: int | None
    data_sha256: str | None
    bytes_out: int
    metrics: tuple[str, ...]  # names, never values
    epsilon: float | None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), allow_nan=False, default=_scalar)

    @classmethod
    def from_json(cls, line: str) -> AuditEntry:
        raw = json.loads(line)
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        values["metrics"] = tuple(values.get("metrics") or ())
        return cls(**values)


def _scalar(value: object) -> object:
    """A numpy count (e.g. rows from a frame) is written as the number it is."""
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    raise TypeError(f"an audit entry holds names and counts, not {type(value).__name__}")


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def describe_result(method: str, result: object) -> dict[str, Any]:
    """What an answer reveals, for the audit: rows read, data version, metric names, epsilon, round."""
    described: dict[str, Any] = dict.fromkeys(("rows_read", "data_sha256", "epsilon", "round"))
    described["metrics"] = metric_names(result)
    if isinstance(result, SiloReady):
        described["rows_read"] = result.data_rows or result.train_rows + result.val_rows
        described["data_sha256"] = result.data_sha256 or None
    elif isinstance(result, FitRes):
        described.update(rows_read=result.examples, epsilon=_finite(result.epsilon), round=result.round)
    elif isinstance(result, Evaluation):
        described["rows_read"] = result.examples
    elif isinstance(result, SiloDescription):
        described["rows_read"] = result.rows
    elif isinstance(result, dict) and result and all(isinstance(v, Evaluation) for v in result.values()):
        # every model is scored on the same validation rows: rows read once
        described["rows_read"] = max(v.examples for v in result.values())
    return described


class AuditLog:
    """Append-only JSON lines; a restarted site appends to what is there."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._checked = False

    def _mend_torn_tail(self) -> None:
        """A crash mid-write leaves a line without its newline: end it, so the next entry is whole."""
        try:
            with self.path.open("rb") as log:
                log.seek(0, os.SEEK_END)
                if log.tell() == 0:
                    return
                log.seek(-1, os.SEEK_END)
                torn = log.read(1) != b"\n"
        except FileNotFoundError:
            return
        if torn:
            logger.warning("audit log %s ends with a torn line; appending after it", self.path)
            with self.path.open("ab") as log:
                log.write(b"\n")

    def record(self, entry: AuditEntry) -> None:
        """Append one line and fsync it before returning."""
        entry = dataclasses.replace(entry, epsilon=_finite(entry.epsilon))
        line = (entry.to_json() + "\n").encode()
        with self._lock:
            if not self._checked:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._mend_torn_tail()
                self._checked = True
            created = not self.path.exists()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                view = memoryview(line)
                while view:  # a regular file takes it whole; a short write must not tear the line
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:  # the new file's directory entry must survive a crash too
                folder = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(folder)
                finally:
                    os.close(folder)


def read_audit(path: Path) -> list[AuditEntry]:
    """The entries in the order they were written; a torn line is skipped with a warning."""
    entries = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entries.append(AuditEntry.from_json(line))
        except (ValueError, TypeError, AttributeError) as err:
            logger.warning("%s:%d: skipping a torn or unreadable audit line (%s)", path, number, err)
    return entries


def audit_table(entries: list[AuditEntry], run_id: str | None = None) -> Table:
    """The log for a privacy officer; ``run_id`` (or a prefix of it) keeps one run's requests."""
    if run_id is not None:
        entries = [e for e in entries if e.run_id.startswith(run_id)]
    table = Table(title=f"audit log: {len(entries)} request(s)")
    for column in ("time", "run", "round", "method", "outcome", "rule / detail"):
        table.add_column(column)
    for column in ("rows read", "bytes out"):
        table.add_column(column, justify="right")
    table.add_column("metrics")
    table.add_column("epsilon", justify="right")
    for e in entries:
        why = f"{e.rule}: {e.detail}" if e.rule else e.detail
        cells = (
            e.time.replace("T", " ")[:19], e.run_id[:8], "" if e.round is None else str(e.round), e.method,
        )  # fmt: skip
        table.add_row(
            *(Text(c) for c in cells),
            Text(e.outcome, style=OUTCOME_STYLE.get(e.outcome, "")),
            Text(why),
            "" if e.rows_read is None else str(e.rows_read),
            str(e.bytes_out),
            Text(", ".join(e.metrics)),
            "" if e.epsilon is None else f"{e.epsilon:.3g}",
        )
    return table

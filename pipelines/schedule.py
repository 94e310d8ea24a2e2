"""Scheduled runs: start a pipeline on its ``[schedule] cron``, one run at a time, catching up once.

    fedsilo schedule pipelines/examples/heart_disease/pipeline.toml   # with a [schedule] section

- Fire times come from croniter in the pipeline's time zone (DST-aware, zoneinfo).
- Never two runs of one pipeline at once: a run holds an exclusive ``fcntl`` lock on
  ``<state>/<name>.lock``, so a second scheduler (or a fire that comes while a run is going)
  skips that fire and logs it.
- Catch-up: the last fire time is kept in ``<state>/<name>.json``; a scheduler that starts
  after one or more fires were missed (it was down) runs once at once, not once per missed fire.
- Each run is logged (python logging, and ``<state>/<name>.runs.jsonl``) and its MLflow run is
  tagged ``fedsilo.trigger = schedule`` and ``fedsilo.schedule.fire_time``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO
from zoneinfo import ZoneInfo

from croniter import croniter

from pipelines.spec import LoadedPipeline, PipelineError, ScheduleSection

logger = logging.getLogger(__name__)

# Runs a pipeline for one fire; returns the MLflow run id. Raising means the run failed.
Launch = Callable[[LoadedPipeline, dict[str, str]], str]


def prepare_scheduled(loaded: LoadedPipeline) -> LoadedPipeline:
    """The pipeline a scheduled run trains: warm-started from the registry's ``@champion``
    when there is one and the pipeline names no ``[model] from`` of its own (else unchanged)."""
    from pipelines.warmstart import with_champion_warm_start

    return with_champion_warm_start(loaded)


def schedule_of(loaded: LoadedPipeline) -> ScheduleSection:
    if loaded.spec.schedule is None:
        raise PipelineError(
            loaded.path,
            [f"{loaded.path.name}: schedule: no [schedule] section; add one, e.g.\n\n  [schedule]\n"
             '  cron = "0 2 * * *"\n  timezone = "Europe/Zurich"'],
        )  # fmt: skip
    return loaded.spec.schedule


def fires_between(cron: str, timezone: str, after: datetime, until: datetime) -> list[datetime]:
    """Fire times in (after, until], in the schedule's time zone."""
    tz = ZoneInfo(timezone)
    it = croniter(cron, after.astimezone(tz))
    fires: list[datetime] = []
    while (fire := it.get_next(datetime)) <= until:
        fires.append(fire)
        if len(fires) > 100_000:  # a per-second cron over a long downtime: enough to know
            break
    return fires


def next_fire(cron: str, timezone: str, after: datetime) -> datetime:
    fire: datetime = croniter(cron, after.astimezone(ZoneInfo(timezone))).get_next(datetime)
    return fire


@contextmanager
def run_lock(path: Path) -> Iterator[bool]:
    """Hold an exclusive lock on ``path`` (True), or yield False at once when another holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = path.open("a")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()


@dataclass(frozen=True)
class FireOutcome:
    fire_time: datetime
    status: str  # "finished" | "failed" | "skipped"
    run_id: str | None = None
    seconds: float = 0.0
    error: str | None = None


class Scheduler:
    """One pipeline's schedule. ``clock`` and ``sleep`` are injectable so tests need not wait."""

    def __init__(
        self,
        loaded: LoadedPipeline,
        launch: Launch,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
        state_dir: Path | None = None,
    ) -> None:
        self.loaded = loaded
        self.schedule = schedule_of(loaded)
        self.launch = launch
        self.clock = clock
        self.sleep = sleep
        folder = state_dir or Path(self.schedule.state).expanduser().resolve()
        name = loaded.spec.name
        self.lock_path = folder / f"{name}.lock"
        self.state_path = folder / f"{name}.json"
        self.history_path = folder / f"{name}.runs.jsonl"

    def _state(self) -> dict[str, str]:
        try:
            state = json.loads(self.state_path.read_text())
            return state if isinstance(state, dict) else {}
        except (OSError, ValueError):
            return {}

    def _write_state(self, state: dict[str, str]) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self.state_path)  # atomic: a crash never leaves half a state file

    def last_fire(self) -> datetime | None:
        """The last fire that ran, else when this pipeline's schedule was first watched."""
        state = self._state()
        stamp = state.get("last_fire") or state.get("watching_since")
        return datetime.fromisoformat(stamp) if stamp else None

    def _record(self, outcome: FireOutcome) -> None:
        if outcome.status != "skipped":
            self._write_state({**self._state(), "last_fire": outcome.fire_time.isoformat()})
        entry = {
            "fire_time": outcome.fire_time.isoformat(),
            "status": outcome.status,
            "run_id": outcome.run_id,
            "seconds": round(outcome.seconds, 3),
            "error": outcome.error,
        }
        with self.history_path.open("a") as history:
            history.write(json.dumps(entry) + "\n")

    def fire(self, fire_time: datetime, catch_up: bool = False) -> FireOutcome:
        """Run the pipeline for ``fire_time`` unless a run of it is going (then skip)."""
        name = self.loaded.spec.name
        with run_lock(self.lock_path) as locked:
            if not locked:
                logger.warning("%s: fire at %s skipped: a run of this pipeline is going", name, fire_time)
                outcome = FireOutcome(fire_time, "skipped", error="a run of this pipeline was going")
                self._record(outcome)
                return outcome
            tags = {
                "fedsilo.trigger": "schedule",
                "fedsilo.schedule.fire_time": fire_time.isoformat(),
                "fedsilo.schedule.cron": self.schedule.cron,
                "fedsilo.schedule.timezone": self.schedule.timezone,
            }
            if catch_up:
                tags["fedsilo.schedule.catch_up"] = "true"
            logger.warning("%s: scheduled run for %s starting%s", name, fire_time, " (catch-up)" * catch_up)
            start = time.perf_counter()
            try:
                run_id = self.launch(prepare_scheduled(self.loaded), tags)
            except Exception as err:  # a failed run is logged; the schedule goes on
                seconds = time.perf_counter() - start
                outcome = FireOutcome(fire_time, "failed", seconds=seconds, error=str(err))
                logger.error("%s: scheduled run for %s failed: %s", name, fire_time, err)
            else:
                outcome = FireOutcome(fire_time, "finished", run_id, time.perf_counter() - start)
                logger.warning("%s: scheduled run for %s finished: MLflow run %s", name, fire_time, run_id)
            self._record(outcome)
            return outcome

    def catch_up(self) -> FireOutcome | None:
        """After downtime: one run now for the fires missed since the last one (None if none)."""
        last, now = self.last_fire(), self.clock()
        if last is None:  # first start: nothing was due before now
            self._write_state({"watching_since": now.isoformat()})
            return None
        if not self.schedule.catch_up:
            return None
        missed = fires_between(self.schedule.cron, self.schedule.timezone, last, now)
        if not missed:
            return None
        logger.warning(
            "%s: %d fire(s) missed since %s (last at %s); running once now",
            self.loaded.spec.name, len(missed), last, missed[-1],
        )  # fmt: skip
        return self.fire(missed[-1], catch_up=True)

    def serve(self, max_runs: int | None = None) -> list[FireOutcome]:
        """Fire on schedule until ``max_runs`` runs have started (forever when None)."""
        outcomes: list[FireOutcome] = []
        caught = self.catch_up()
        if caught is not None:
            outcomes.append(caught)
        cron, tz = self.schedule.cron, self.schedule.timezone
        cursor = self.clock()
        while max_runs is None or sum(o.status != "skipped" for o in outcomes) < max_runs:
            fire_time = next_fire(cron, tz, cursor)
            logger.info("%s: next run at %s", self.loaded.spec.name, fire_time)
            wait = (fire_time - self.clock()).total_seconds()
            if wait > 0:
                self.sleep(wait)
            outcomes.append(self.fire(fire_time))
            now = self.clock()
            for missed in fires_between(cron, tz, fire_time, now):  # came while that run was going
                logger.warning("%s: fire at %s skipped: the run for %s was going", self.loaded.spec.name,
                               missed, fire_time)  # fmt: skip
                reason = f"the run for {fire_time.isoformat()} was going"
                skipped = FireOutcome(missed, "skipped", error=reason)
                self._record(skipped)
                outcomes.append(skipped)
            cursor = max(fire_time, now)
        return outcomes


def federation_launcher(rounds: int | None = None, address: str | None = None) -> Launch:
    """Run the federation in this process (a local Ray, or ``address``); returns the MLflow run id."""

    def launch(loaded: LoadedPipeline, tags: dict[str, str]) -> str:
        from pipelines.runner import RunOptions, run_federation

        summary = run_federation(loaded, RunOptions(address=address, rounds=rounds, tags=tags))
        return summary.run_id

    return launch

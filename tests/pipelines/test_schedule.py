"""Scheduled runs: cron and time zone validation, catch-up after downtime, one run at a time.
A whole `fedsilo schedule` federation runs in test_mlflow_server.py, against a tracking server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipelines.schedule import Scheduler, fires_between
from pipelines.spec import LoadedPipeline, PipelineError, parse_pipeline
from tests.conftest import example_pipeline_text


def _pipeline(tmp_path: Path, cron: str = "0 2 * * *", extra: str = "") -> LoadedPipeline:
    text = example_pipeline_text() + f'\n[schedule]\ncron = "{cron}"\ntimezone = "Europe/Zurich"\n{extra}'
    return parse_pipeline(text, tmp_path / "pipeline.toml")


class FakeClock:
    """Time that moves only when the scheduler sleeps (or a fake run takes time)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Launches:
    def __init__(self, clock: FakeClock | None = None, takes: timedelta = timedelta(0)) -> None:
        self.calls: list[dict[str, str]] = []
        self.clock, self.takes = clock, takes

    def __call__(self, loaded: LoadedPipeline, tags: dict[str, str]) -> str:
        self.calls.append(tags)
        if self.clock is not None:
            self.clock.now += self.takes
        return f"run-{len(self.calls)}"


def test_bad_cron_and_unknown_time_zone_name_the_line_and_field(tmp_path: Path) -> None:
    with pytest.raises(PipelineError) as caught:
        _pipeline(tmp_path, cron="61 * * * *")
    (problem,) = caught.value.problems
    assert re.match(r"^pipeline\.toml:\d+: schedule\.cron: not a cron expression", problem), problem
    assert "'61 * * * *'" in problem
    text = example_pipeline_text() + '\n[schedule]\ncron = "0 2 * * *"\ntimezone = "Mars/Olympus"\n'
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(text, tmp_path / "pipeline.toml")
    assert "schedule.timezone: unknown time zone" in caught.value.problems[0]


def test_fire_times_follow_the_time_zone_across_daylight_saving() -> None:
    # 02:30 Zurich: 01:30 UTC in winter, 00:30 UTC in summer; 29 March 2026 has no 02:30 at all,
    # so that day's run starts when the clocks jump to 03:00, as cron does.
    fires = fires_between("30 2 * * *", "Europe/Zurich", datetime(2026, 3, 27, tzinfo=UTC),
                          datetime(2026, 3, 31, tzinfo=UTC))  # fmt: skip
    utc = [f.astimezone(UTC).strftime("%d %H:%M") for f in fires]
    assert utc == ["27 01:30", "28 01:30", "29 01:00", "30 00:30"]


def test_first_start_waits_for_the_next_fire_and_tags_the_run(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
    launches = Launches()
    scheduler = Scheduler(_pipeline(tmp_path), launches, clock, clock.sleep, tmp_path / "state")

    (outcome,) = scheduler.serve(max_runs=1)

    assert outcome.status == "finished" and outcome.run_id == "run-1"
    assert outcome.fire_time == datetime(2026, 6, 2, 2, 0, tzinfo=outcome.fire_time.tzinfo)
    assert clock.now == outcome.fire_time  # slept until then, not longer
    assert launches.calls[0]["fedsilo.trigger"] == "schedule"
    assert launches.calls[0]["fedsilo.schedule.fire_time"] == "2026-06-02T02:00:00+02:00"
    assert "fedsilo.schedule.catch_up" not in launches.calls[0]
    history = [json.loads(line) for line in scheduler.history_path.read_text().splitlines()]
    assert [h["status"] for h in history] == ["finished"]


def test_after_downtime_it_catches_up_once(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
    first = Launches()
    Scheduler(_pipeline(tmp_path), first, clock, clock.sleep, tmp_path / "state").serve(max_runs=1)
    clock.now += timedelta(days=3, hours=5)  # the scheduler was down for three fires
    launches = Launches()
    scheduler = Scheduler(_pipeline(tmp_path), launches, clock, clock.sleep, tmp_path / "state")

    caught = scheduler.catch_up()

    assert caught is not None and len(launches.calls) == 1  # once, not three times
    assert launches.calls[0]["fedsilo.schedule.catch_up"] == "true"
    assert caught.fire_time.isoformat() == "2026-06-05T02:00:00+02:00"  # the latest missed fire
    assert scheduler.catch_up() is None  # and nothing more to catch up


def test_catch_up_can_be_turned_off(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
    loaded = _pipeline(tmp_path, extra="catch_up = false\n")
    Scheduler(loaded, Launches(), clock, clock.sleep, tmp_path / "state").serve(max_runs=1)
    clock.now += timedelta(days=3)
    launches = Launches()
    assert Scheduler(loaded, launches, clock, clock.sleep, tmp_path / "state").catch_up() is None
    assert launches.calls == []


def test_fires_during_a_long_run_are_skipped_and_logged(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 6, 1, 12, 0, 30, tzinfo=UTC))
    launches = Launches(clock, takes=timedelta(minutes=2, seconds=10))  # each run outlasts two fires
    scheduler = Scheduler(_pipeline(tmp_path, cron="* * * * *"), launches, clock, clock.sleep, tmp_path / "s")

    outcomes = scheduler.serve(max_runs=2)

    statuses = [o.status for o in outcomes]
    assert statuses == ["finished", "skipped", "skipped", "finished", "skipped", "skipped"]
    ran = [o.fire_time.astimezone(UTC).strftime("%H:%M") for o in outcomes if o.status == "finished"]
    assert ran == ["12:01", "12:04"]  # the next fire after the run ended, never a backlog


def test_a_failed_run_is_logged_and_the_schedule_goes_on(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
    calls: list[str] = []

    def launch(loaded: LoadedPipeline, tags: dict[str, str]) -> str:
        calls.append(tags["fedsilo.schedule.fire_time"])
        if len(calls) == 1:
            raise RuntimeError("silo cleveland: data file missing")
        return "ok"

    outcomes = Scheduler(_pipeline(tmp_path), launch, clock, clock.sleep, tmp_path / "s").serve(max_runs=2)

    assert [o.status for o in outcomes] == ["failed", "finished"]
    assert outcomes[0].error == "silo cleveland: data file missing"


def test_a_run_going_in_another_process_makes_the_fire_skip(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
    launches = Launches()
    scheduler = Scheduler(_pipeline(tmp_path), launches, clock, clock.sleep, tmp_path / "state")
    scheduler.lock_path.parent.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
         "print('locked', flush=True); time.sleep(60)", str(scheduler.lock_path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"

        outcome = scheduler.fire(clock.now)

        assert outcome.status == "skipped" and launches.calls == []
    finally:
        holder.kill()
        holder.wait()
    assert scheduler.fire(clock.now).status == "finished"  # the lock is free again


def test_a_real_per_second_schedule_never_overlaps(tmp_path: Path) -> None:
    active, overlaps, starts = [0], [0], []
    guard = threading.Lock()

    def launch(loaded: LoadedPipeline, tags: dict[str, str]) -> str:
        with guard:
            active[0] += 1
            overlaps[0] = max(overlaps[0], active[0])
        starts.append(time.time())
        time.sleep(1.5)  # outlasts the next fire
        with guard:
            active[0] -= 1
        return "run"

    loaded = _pipeline(tmp_path, cron="* * * * * *")  # every second (croniter's 6th field)
    outcomes = Scheduler(loaded, launch, state_dir=tmp_path / "state").serve(max_runs=2)

    assert overlaps[0] == 1
    assert [o.status for o in outcomes].count("finished") == 2
    assert "skipped" in [o.status for o in outcomes]
    assert all(o.fire_time.microsecond == 0 for o in outcomes)
    assert 1.5 <= starts[1] - starts[0] < 4.0

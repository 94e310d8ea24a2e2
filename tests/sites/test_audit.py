"""The audit log: appended across restarts, names and counts only, shown to the privacy officer."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import threading
from pathlib import Path

import pytest
from rich.console import Console

from pipelines.federated import site_cli
from silo.messages import Evaluation, FitRes, SiloReady
from sites.audit import AuditEntry, AuditLog, audit_table, describe_result, read_audit, utc_now
from tests.sites.test_config import SITE, load, write_site

# Values no audit line may carry: they are the data's and the model's, not the audit's
LOSS_SUM, CORRECT, TRAIN_LOSS = 31.41592, 4242, 0.2718281
EVALUATION = Evaluation(
    "cleveland", examples=61, loss_sum=LOSS_SUM, correct=CORRECT,
    positive_hist=(907, 911), negative_hist=(919, 929),
)  # fmt: skip
FIT_RES = FitRes(
    "cleveland", round=4, examples=242, train_loss=TRAIN_LOSS, evaluation=EVALUATION, epsilon=1.25
)


def entry(method: str = "fit", run_id: str = "0123456789abcdef", **change: object) -> AuditEntry:
    base = AuditEntry(
        time="2025-03-01T12:00:00.000+00:00", site="cleveland", coordinator="ab" * 32, run_id=run_id,
        round=None, pipeline="heart",
        pipeline_sha256="cd" * 32, task="tabular", method=method, outcome="served", rule=None, detail="",
        rows_read=None, data_sha256=None, bytes_out=0, metrics=(), epsilon=None,
    )  # fmt: skip
    return dataclasses.replace(base, **change)  # type: ignore[arg-type]


def served(result: object, method: str) -> AuditEntry:
    return entry(method, bytes_out=1234, **describe_result(method, result))


def test_entries_append_across_restarts(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "logs" / "audit.jsonl"
    first = [entry("describe"), entry("prepare_task")]
    second = [entry("fit", round=1), entry("publish", outcome="refused", rule="publish", detail="no")]
    # Execute
    log = AuditLog(path)
    for e in first:
        log.record(e)
    restarted = AuditLog(path)
    for e in second:
        restarted.record(e)
    # Assert
    assert read_audit(path) == first + second
    assert len(path.read_text().splitlines()) == 4


def test_only_names_and_counts_are_written(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "audit.jsonl"
    ready = SiloReady("cleveland", 242, 61, 0, 13, 14, "cpu", data_sha256="ee" * 32, data_rows=303)
    # Execute
    log = AuditLog(path)
    for method, result in (("prepare_task", ready), ("fit", FIT_RES), ("evaluate", EVALUATION)):
        log.record(served(result, method))
    # Assert
    text = path.read_text()
    for value in (LOSS_SUM, CORRECT, TRAIN_LOSS, 907, 911, 919, 929):
        assert str(value) not in text
    prepare, fitted, evaluated = (json.loads(line) for line in text.splitlines())
    assert (prepare["rows_read"], prepare["data_sha256"]) == (303, "ee" * 32)
    assert fitted["metrics"] == [
        "loss_sum",
        "count",
        "correct",
        "positive_hist",
        "negative_hist",
        "train_loss",
    ]
    assert (fitted["rows_read"], fitted["round"], fitted["epsilon"], fitted["bytes_out"]) == (
        242,
        4,
        1.25,
        1234,
    )
    assert (evaluated["rows_read"], evaluated["round"], evaluated["epsilon"]) == (61, None, None)


def test_time_is_iso_8601_utc() -> None:
    # Prepare / Execute
    now = datetime.datetime.fromisoformat(utc_now())
    # Assert
    assert now.utcoffset() == datetime.timedelta(0)


def test_describe_result() -> None:
    # Prepare
    scores = {"models:/m/1": EVALUATION, "models:/m/2": dataclasses.replace(EVALUATION, examples=60)}
    # Execute
    described = describe_result("score_models", scores)
    nothing = describe_result("public_keys", b"\x00" * 32)
    # Assert
    assert described["rows_read"] == 61 and described["metrics"][0] == "loss_sum"
    assert nothing == {"rows_read": None, "data_sha256": None, "metrics": (), "epsilon": None, "round": None}


def test_torn_last_line_is_skipped_and_mended(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Prepare
    path = tmp_path / "audit.jsonl"
    AuditLog(path).record(entry("describe"))
    with path.open("a") as log:
        log.write('{"time": "2025-')  # the site died mid-write
    # Execute
    with caplog.at_level(logging.WARNING):
        AuditLog(path).record(entry("status"))
        entries = read_audit(path)
    # Assert
    assert [e.method for e in entries] == ["describe", "status"]
    assert "torn" in caplog.text


def test_concurrent_records_stay_whole_lines(tmp_path: Path) -> None:
    # Prepare
    log = AuditLog(tmp_path / "audit.jsonl")

    def serve(worker: int) -> None:
        for i in range(25):
            log.record(entry("fit", round=i, detail=f"worker {worker} " + "x" * 2000))

    threads = [threading.Thread(target=serve, args=(w,)) for w in range(8)]
    # Execute
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Assert
    assert len(read_audit(log.path)) == 200


def test_non_finite_epsilon_is_written_as_null(tmp_path: Path) -> None:
    # Prepare
    log = AuditLog(tmp_path / "audit.jsonl")
    # Execute
    log.record(entry(epsilon=float("inf")))
    # Assert
    (read,) = read_audit(log.path)
    assert read.epsilon is None


def test_audit_table_renders_method_and_rule() -> None:
    # Prepare
    refused = entry("publish", outcome="refused", rule="publish", detail="this site does not publish")
    other_run = entry("fit", run_id="fedcba9876543210", round=2, rows_read=242, metrics=("loss_sum",))
    console = Console(record=True, width=220)
    # Execute
    console.print(audit_table([refused, other_run], run_id="0123"))
    # Assert
    text = console.export_text()
    assert "publish: this site does not publish" in text and "refused" in text and "01234567" in text
    assert "fedcba98" not in text and "1 request(s)" in text


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fedsilo")
    site_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(list(argv))


def test_site_audit_prints_the_table(tmp_path: Path) -> None:
    # Prepare
    site = load(tmp_path, SITE)
    log = AuditLog(site.audit_path)
    log.record(served(FIT_RES, "fit"))
    log.record(entry("fit", round=101, outcome="refused", rule="max_rounds", detail="round 101 asked"))
    console = Console(record=True, width=220)
    # Execute
    code = site_cli.main(parse("site", "audit", "--site", str(site.path)), console=console)
    # Assert
    text = console.export_text()
    assert code == 0
    assert "max_rounds: round 101 asked" in text and "fit" in text and "242" in text and "1234" in text


def test_site_audit_json_and_run_filter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare
    site = load(tmp_path, SITE)
    log = AuditLog(site.audit_path)
    log.record(entry("describe", run_id="run-a"))
    log.record(entry("describe", run_id="run-b"))
    # Execute
    code = site_cli.main(parse("site", "audit", "--site", str(site.path), "--json", "--run", "run-b"))
    # Assert
    (line,) = capsys.readouterr().out.splitlines()
    assert code == 0 and json.loads(line)["run_id"] == "run-b"


def test_site_audit_without_a_log(tmp_path: Path) -> None:
    # Prepare
    site = load(tmp_path, SITE)
    console = Console(record=True, width=220)
    # Execute
    code = site_cli.main(parse("site", "audit", "--site", str(site.path)), console=console)
    # Assert
    assert code == 0 and "no audit log at" in console.export_text()


def test_site_audit_after_the_data_is_gone(tmp_path: Path) -> None:
    # Prepare
    site = load(tmp_path, SITE)
    AuditLog(site.audit_path).record(entry("describe"))
    site.data_path.unlink()
    console = Console(record=True, width=220)
    # Execute
    code = site_cli.main(parse("site", "audit", "--site", str(site.path)), console=console)
    # Assert
    assert code == 0 and "describe" in console.export_text()


def test_site_audit_with_a_bad_site_file(tmp_path: Path) -> None:
    # Prepare
    path = write_site(tmp_path, SITE.replace("min_silos = 3", "min_silos = 0"))
    errors = Console(record=True, width=220)
    # Execute
    code = site_cli.main(parse("site", "audit", "--site", str(path)), err_console=errors)
    # Assert
    assert code == 2 and "policy.min_silos" in errors.export_text()


def test_site_serve_parses() -> None:
    # Prepare / Execute
    args = parse("site", "serve", "--site", "SITE.toml", "--address", "127.0.0.1:6380")
    # Assert
    assert (args.site_command, args.site, args.address) == ("serve", Path("SITE.toml"), "127.0.0.1:6380")

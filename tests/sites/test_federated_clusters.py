"""Federated clusters end to end: three sites, each `fedsilo site serve` with its own Ray
instance, connecting out over mutual TLS to the coordinator's gateway; a fourth silo local.

    pytest tests/sites/test_federated_clusters.py

One set of site processes serves every test here, in order: the dry run, a run two sites
refuse, the next run after approving (the same figures as a shared cluster), and a site
killed mid-run that rejoins. Each site's policy lives in its SITE.toml, re-read per run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pytest
from rich.console import Console

from pipelines.federated import local as kit
from pipelines.federated import site_cli
from pipelines.spec import load_pipeline
from sites.audit import read_audit
from sites.config import load_site
from tests.conftest import ray_head, run_in_process

pytestmark = pytest.mark.slow

SITES = ["cleveland", "hungary", "switzerland"]
TASK = Path(__file__).with_name("heart_task.py")
POLICIES = {
    "cleveland": 'approved_tasks = ["tabular"]',
    "hungary": f'approved_tasks = ["{"ab" * 32}"]',  # some other task: not the tables
    "switzerland": "require_secagg = true",
}


@dataclass
class Federation:
    folder: Path
    port: int
    certs: Path
    sites: dict[str, kit.Site]
    hungary_ray: str  # hungary's own Ray cluster, which outlives its `site serve` process

    def pipeline(
        self, name: str, rounds: int = 3, privacy: str = "", remote: list[str] = SITES, top: str = ""
    ) -> Path:
        folder = self.folder / name
        folder.mkdir(exist_ok=True)
        path = kit.pipeline_file(folder, self.port, self.certs, remote, rounds=rounds)
        text = path.read_text().replace("min_silos = 3", f"min_silos = 2\n{top}")
        if privacy:
            text = text.replace('he = "packed"', f'he = "packed"\n{privacy}')
        if not remote:
            text = text[: text.index("[federation]")]
        path.write_text(text)
        return path

    def set_policy(self, site: str, policy: str) -> None:
        extra = f'ray_address = "{self.hungary_ray}"' if site == "hungary" else ""
        kit.site_file(self.folder / "sites", site, self.port, self.certs, policy, site=extra)

    def audit(self, site: str) -> list[Any]:
        return read_audit(load_site(self.sites[site].site_toml).audit_path)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    folder = tmp_path_factory.mktemp("federated")
    port = kit.free_port()
    certs = kit.certificates(folder / "certs", ["coordinator", *SITES])
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    with ray_head("--include-dashboard", "false", env=env) as ray_port:
        federation = Federation(folder, port, certs, {}, f"127.0.0.1:{ray_port}")
        for name in SITES:
            federation.set_policy(name, POLICIES[name])
            federation.sites[name] = kit.Site(folder / "sites" / name / "SITE.toml").start()
        try:
            yield federation
        finally:
            for site in federation.sites.values():
                site.stop()


def tags_and_events(summary: dict[str, Any]) -> tuple[dict[str, str], list[dict[str, Any]]]:
    mlflow.set_tracking_uri(summary["tracking_uri"])
    run = mlflow.get_run(summary["run_id"])
    events = mlflow.artifacts.load_dict(f"runs:/{summary['run_id']}/events.json")["events"]
    return run.data.tags, events


def test_a_dry_run_predicts_which_sites_refuse_and_why(ray_local: None, federation: Federation) -> None:
    # Prepare: a run without secure aggregation, of the built-in tables
    pipeline = load_pipeline(federation.pipeline("dry", privacy='secagg = "off"'))
    console = Console(record=True, width=200)
    # Execute
    code = site_cli.ask(pipeline, console)
    # Assert
    table = console.export_text()
    assert code == 1
    assert "cleveland" in table and "accepts" in table
    assert "approved_tasks" in table and "require_secagg" in table
    assert [e.method for e in federation.audit("hungary")] == ["ask"]
    assert federation.audit("switzerland")[0].rule == "require_secagg"


def test_sites_that_refuse_are_left_out_named_and_the_run_goes_on(
    ray_local: None, federation: Federation
) -> None:
    # Execute: hungary has not approved the tables, switzerland requires secure aggregation; the
    # updates stream in pieces (each a ciphertext), cleveland's through its gateway
    pipeline = federation.pipeline("refused", privacy='secagg = "off"', top="piece_values = 1")
    summary, out = run_in_process(pipeline)
    # Assert
    tags, events = tags_and_events(summary)
    assert summary["rounds_completed"] == 3
    assert {r["participants"] for r in summary["per_round"]} == {2}  # cleveland and long-beach
    assert tags["fedsilo.sites.left_out"] == "hungary=approved_tasks, switzerland=require_secagg"
    left_out = {e["silo"]: e["event"] for e in events}
    assert "site 'hungary' refuses (approved_tasks)" in left_out["hungary"]
    assert "site 'switzerland' refuses (require_secagg)" in left_out["switzerland"]
    assert "site hungary left out (approved_tasks)" in out
    refused = [e for e in federation.audit("hungary") if e.outcome == "refused"]
    assert [(e.method, e.rule, e.run_id) for e in refused][-1] == (
        "open",
        "approved_tasks",
        summary["run_id"],
    )
    served = [e.method for e in federation.audit("cleveland") if e.run_id == summary["run_id"]]
    # set-up's two statistics sums travel whole; each round's update as one piece a round
    assert served.count("encode_staged") == 2 and served.count("encode_staged_piece") == 3


def test_once_approved_every_site_trains_to_the_figures_of_a_shared_cluster(
    ray_local: None, federation: Federation
) -> None:
    # Prepare: hungary's officer approves the tables; the run has secure aggregation (the default)
    federation.set_policy("hungary", 'approved_tasks = ["tabular"]')
    shared, _ = run_in_process(federation.pipeline("shared", remote=[]))
    # Execute
    remote, _ = run_in_process(federation.pipeline("approved"))
    # Assert
    assert [r["participants"] for r in remote["per_round"]] == [4, 4, 3 + 1]
    assert remote["final"]["global_val_accuracy"] == shared["final"]["global_val_accuracy"]
    for key in ("global_val_loss", "global_val_auc"):  # each run's HE key seeds its own dither
        assert remote["final"][key] == pytest.approx(shared["final"][key], abs=1e-4), key
    audit = [e for e in federation.audit("hungary") if e.run_id == remote["run_id"]]
    served = {e.method for e in audit if e.outcome == "served"}
    assert {
        "open",
        "describe",
        "stats_sums",
        "fit",
        "encode_staged",
        "deal_masks",
        "unmask",
        "evaluate",
    } <= served
    assert {e.round for e in audit if e.method == "fit"} == {1, 2, 3}
    assert sum(e.bytes_out for e in audit) > 0


def task_pipeline(federation: Federation, name: str) -> Path:
    """heart_task.py, a [task] module, on the same four hospitals (long-beach local)."""
    folder = federation.folder / name
    folder.mkdir()
    shutil.copy(TASK, folder / TASK.name)
    text = federation.pipeline(name, rounds=2).read_text()
    head, rest = text.split("[model]", 1)
    rest = rest[rest.index("[[silos]]") :]
    (folder / "pipeline.toml").write_text(
        head.replace('name = "heart-disease"', 'name = "heart-task"')
        + f'[task]\nmodule = "{TASK.name}"\nkind = "binary"\n\n'
        + rest.replace('registered_model = "heart-disease-classifier"', 'registered_model = "heart-task"')
    )
    return folder / "pipeline.toml"


def test_a_task_module_is_served_where_its_sha256_is_approved_and_not_elsewhere(
    ray_local: None, federation: Federation
) -> None:
    # Prepare: cleveland approves the task file's hash; hungary and switzerland the tables only
    digest = hashlib.sha256(TASK.read_bytes()).hexdigest()
    federation.set_policy("cleveland", f'approved_tasks = ["{digest}"]')
    path = task_pipeline(federation, "task-refused")
    try:
        # Execute
        refused, _ = run_in_process(path)
        federation.set_policy("hungary", f'approved_tasks = ["tabular", "{digest}"]')
        approved, _ = run_in_process(task_pipeline(federation, "task-approved"))
    finally:
        federation.set_policy("cleveland", f'approved_tasks = ["tabular", "{digest}"]')
    # Assert
    tags, events = tags_and_events(refused)
    assert tags["fedsilo.sites.left_out"] == "hungary=approved_tasks, switzerland=approved_tasks"
    assert any(digest in e["event"] for e in events if e["silo"] == "hungary")  # what to approve
    assert [r["participants"] for r in refused["per_round"]] == [2, 2]
    assert [r["participants"] for r in approved["per_round"]] == [3, 3]
    assert approved["final"]["global_val_accuracy"] > 0.6  # it trains (2 rounds of a linear model)
    served = {e.method for e in federation.audit("hungary") if e.run_id == approved["run_id"]}
    assert {"open", "describe", "prepare_task", "fit", "evaluate"} <= served


def test_a_site_killed_mid_run_is_left_out_then_rejoins(ray_local: None, federation: Federation) -> None:
    # Prepare: a long run in the background
    path = federation.pipeline("killed", rounds=80)
    result: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: result.update(summary=run_in_process(path)[0]))
    runner.start()
    site = federation.sites["hungary"]
    before = len(federation.audit("hungary"))

    def fitted(round_: int) -> bool:
        return any(
            e.method == "fit" and (e.round or 0) >= round_ for e in federation.audit("hungary")[before:]
        )

    # Execute: kill its `site serve` (the silo actor dies with it; its Ray cluster stays), restart it
    kit.wait_for(lambda: fitted(2), 180, "hungary to train round 2")
    site.kill()
    site.start()
    runner.join(600)
    # Assert
    summary = result["summary"]
    counts = [r["participants"] for r in summary["per_round"]]
    dip = counts.index(3)
    assert summary["rounds_completed"] == 80
    assert 4 in counts[dip:], f"hungary never rejoined: {counts}\n{site.output()[-3000:]}"
    assert any("hungary" in r["rejoined"] for r in summary["per_round"])
    assert any("hungary" in failure for r in summary["per_round"] for failure in r["failures"])
    entries = federation.audit("hungary")
    assert len(entries) > before and entries[0].method == "ask"  # appended across the restart
    text = load_site(site.site_toml).audit_path.read_text()
    data_rows = (site.site_toml.parent / kit.FILES["hungary"]).read_text().splitlines()
    assert not any(row in text for row in data_rows)  # names and counts, never a row
    assert all(set(json.loads(line)) <= AUDIT_FIELDS for line in text.splitlines())


AUDIT_FIELDS = {
    "time", "site", "coordinator", "run_id", "round", "pipeline", "pipeline_sha256", "task", "method",
    "outcome", "rule", "detail", "rows_read", "data_sha256", "bytes_out", "metrics", "epsilon",
}  # fmt: skip


def test_a_restarted_coordinator_resumes_and_the_sites_reconnect_by_themselves(
    ray_local: None, federation: Federation
) -> None:
    from pipelines import checkpoint
    from pipelines.runner import RunOptions, run_federation

    # Prepare: a coordinator (its own process and Ray) killed once a round is checkpointed
    path = federation.pipeline("resumed", rounds=200)
    checkpoints = path.parent / "checkpoints"
    driver = subprocess.Popen(
        [str(Path(sys.executable).parent / "fedsilo"), "run", str(path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip

    def checkpointed() -> int:
        runs = list(checkpoints.glob("*")) if checkpoints.exists() else []
        try:
            return checkpoint.load(checkpoints, runs[0].name).orchestrator.round if runs else 0
        except (checkpoint.CheckpointError, EOFError, OSError):
            return 0  # being written

    try:
        kit.wait_for(lambda: checkpointed() >= 2, 240, "the coordinator to checkpoint round 2")
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(30)
    run_id = next(checkpoints.glob("*")).name
    done = checkpointed()
    # Execute: resume; the sites, still serving, reconnect to the new gateway with backoff
    summary = run_federation(
        load_pipeline(path), RunOptions(resume=run_id, rounds=done + 3), Console(file=io.StringIO())
    ).to_dict()
    # Assert
    assert summary["run_id"] == run_id and summary["rounds_completed"] == done + 3
    assert [r["participants"] for r in summary["per_round"][-3:]] == [4, 4, 4]
    opens = [e for e in federation.audit("switzerland") if e.run_id == run_id and e.method == "open"]
    assert len(opens) == 2  # the first coordinator's, and the resumed one's

"""The model lifecycle on real Ray and a real MLflow store: run -> evaluate -> promote -> review.

One module-scoped story, in order: a champion (4 rounds, promoted as the first version),
a worse challenger (1 round at a tiny learning rate, one silo's file one row shorter) that
the gate refuses and --force promotes with a reason, and a warm-started run from the
champion that begins where the champion ended and passes the gate.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from pipelines.cli import main
from pipelines.gate import GateResult
from pipelines.promote import Outcome, PromotionRefused, promote
from pipelines.registry import RegistryError
from pipelines.runner import RunOptions, run_federation
from pipelines.spec import load_pipeline
from tests.conftest import EXAMPLE_DIR, example_pipeline_text, kept_in, run_in_process

pytestmark = pytest.mark.slow
MODEL = "heart-disease-classifier"
SILOS = ("cleveland", "hungary", "switzerland", "long-beach")


@dataclass(frozen=True)
class Story:
    folder: Path
    uri: str
    champion: dict[str, Any]  # run summaries
    worse: dict[str, Any]
    warm: dict[str, Any]
    refused_gate: GateResult
    refusal: PromotionRefused
    passed_gate: GateResult
    passed: Outcome
    forced: Outcome


def _pipeline(folder: Path, name: str, va: Path, extra_model: str = "", **replace: str) -> Path:
    text = kept_in(example_pipeline_text(he='"off"', **replace), folder)
    text = text.replace(str(EXAMPLE_DIR / "processed.va.data"), str(va))
    text = text.replace('kind = "logistic"', f'kind = "logistic"\n{extra_model}')
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


def _run(path: Path) -> dict[str, Any]:
    return run_in_process(path)[0]


@pytest.fixture(scope="module")
def story(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> Story:
    from pipelines.evaluate import evaluate_models

    folder = tmp_path_factory.mktemp("lifecycle")
    uri = f"sqlite:///{folder / 'mlruns.db'}"
    va, va_shorter = folder / "va.data", folder / "va-shorter.data"
    lines = (EXAMPLE_DIR / "processed.va.data").read_text().splitlines(keepends=True)
    va.write_text("".join(lines))
    va_shorter.write_text("".join(lines[:-1]))
    quiet = Console(file=io.StringIO())

    champion = _run(_pipeline(folder, "champion", va, rounds="4"))
    promote(uri, MODEL, "1")  # the first promotion needs no gate
    worse_pipeline = _pipeline(folder, "worse", va_shorter, rounds="1", lr="0.0005")
    worse = _run(worse_pipeline)
    champion_uri = f"models:/{MODEL}@champion"
    refused_gate = evaluate_models(
        load_pipeline(worse_pipeline), f"models:/{MODEL}/2", champion_uri, "accuracy", 0.02, quiet
    )
    with pytest.raises(PromotionRefused) as refusal:
        promote(uri, MODEL, "2")
    warm_pipeline = _pipeline(
        folder, "warm", va, f'from = "models:/{MODEL}@champion"', rounds="1", lr="0.000001"
    )
    warm = _run(warm_pipeline)
    passed_gate = evaluate_models(
        load_pipeline(warm_pipeline), f"models:/{MODEL}/3", champion_uri, "accuracy", 0.02, quiet
    )
    passed = promote(uri, MODEL, "3")
    forced = promote(uri, MODEL, "2", force=True, reason="rollback drill")
    return Story(folder, uri, champion, worse, warm, refused_gate, refusal.value, passed_gate, passed, forced)


def _client(story: Story) -> Any:
    import mlflow

    return mlflow.MlflowClient(story.uri, registry_uri=story.uri)


def test_warm_start_begins_where_the_champion_ended(story: Story) -> None:
    client = _client(story)
    start = {m.step: m.value for m in client.get_metric_history(story.warm["run_id"], "global/val_accuracy")}
    start_loss = {m.step: m.value for m in client.get_metric_history(story.warm["run_id"], "global/val_loss")}
    assert start[0] == story.champion["final"]["global_val_accuracy"]
    assert abs(start_loss[0] - story.champion["final"]["global_val_loss"]) < 1e-5
    assert client.get_run(story.warm["run_id"]).data.tags["fedsilo.warm_start"] == (
        f"models:/{MODEL}@champion = version 1"
    )
    assert (
        client.get_model_version(MODEL, "3").tags["fedsilo.warm_start"]
        == f"models:/{MODEL}@champion = version 1"
    )
    assert client.get_run(story.warm["run_id"]).data.params["model.from"] == f"models:/{MODEL}@champion"


def test_data_versions_change_only_where_the_file_changed(story: Story) -> None:
    client = _client(story)
    one, two = client.get_model_version(MODEL, "1").tags, client.get_model_version(MODEL, "2").tags
    assert one["fedsilo.data.cleveland"] == two["fedsilo.data.cleveland"]
    assert one["fedsilo.data.long-beach"] != two["fedsilo.data.long-beach"]
    assert one["fedsilo.data.long-beach"].endswith(";rows:200") and two["fedsilo.data.long-beach"].endswith(
        ";rows:199"
    )
    run_tags = client.get_run(story.worse["run_id"]).data.tags
    assert run_tags["data/long-beach/rows"] == "199" and len(run_tags["data/long-beach/sha256"]) == 64


def test_the_gate_refuses_the_worse_challenger_and_promote_says_why(story: Story) -> None:
    gate = story.refused_gate
    assert not gate.decision().passed and gate.aggregate_delta is not None and gate.aggregate_delta < 0
    assert [s.silo for s in gate.silos] == list(SILOS) and all(s.challenger for s in gate.silos)
    reasons = story.refusal.outcome.reasons
    assert any("worse than the champion on the aggregate" in r for r in reasons)
    client = _client(story)
    tags = client.get_model_version(MODEL, "2").tags
    assert tags["fedsilo.gate.passed"] == "false" and tags["fedsilo.gate.against_version"] == "1"
    gate_run = client.get_run(tags["fedsilo.gate.run_id"])
    assert gate_run.info.run_name == f"evaluate {MODEL} v2 vs v1"
    assert {a.path for a in client.list_artifacts(gate_run.info.run_id)} >= {"gate.json", "gate.md"}
    assert "gate/long-beach/delta" in gate_run.data.metrics


def test_a_passing_challenger_is_promoted(story: Story) -> None:
    assert story.passed_gate.decision().passed
    assert story.passed.promoted and story.passed.previous == "1" and not story.passed.forced
    tags = _client(story).get_model_version(MODEL, "3").tags
    assert tags["fedsilo.promoted_by"] and tags["fedsilo.forced"] == "false"


def test_force_promotion_is_recorded_with_who_and_why(story: Story) -> None:
    client = _client(story)
    assert story.forced.promoted and story.forced.forced and story.forced.previous == "3"
    assert client.get_registered_model(MODEL).aliases["champion"] == 2
    tags = client.get_model_version(MODEL, "2").tags
    assert tags["fedsilo.forced"] == "true" and tags["fedsilo.force_reason"] == "rollback drill"
    assert tags["fedsilo.promoted_by"] and tags["fedsilo.previous_champion"] == "3"


def test_review_json_and_table(
    story: Story, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # the table's every column, as on a wide terminal
    assert main(["review", MODEL, "--tracking-uri", story.uri, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["version"] for r in rows] == ["1", "2", "3"]
    by = {r["version"]: r for r in rows}
    assert by["2"]["aliases"] == ["champion"] and by["3"]["aliases"] == ["challenger"]
    assert by["1"]["val_accuracy"] == story.champion["final"]["global_val_accuracy"]
    assert by["2"]["data_changed"] == ["long-beach"] and by["3"]["data_changed"] == ["long-beach"]
    assert by["2"]["gate"]["passed"] is False and by["3"]["gate"]["passed"] is True
    assert by["2"]["forced"] and by["3"]["warm_start"] == f"models:/{MODEL}@champion = version 1"
    assert all(r["model_card"] == f"runs:/{r['run_id']}/model_card.md" for r in rows)
    assert by["1"]["he"] == "off" and by["1"]["epsilon"] is None and by["1"]["silos"] == list(SILOS)
    assert main(["review", MODEL, "--tracking-uri", story.uri]) == 0
    table = capsys.readouterr().out
    assert "@champion" in table and "long-beach" in table and "forced" in table


def test_warm_start_from_a_missing_model_or_alias_is_a_clear_error(story: Story) -> None:
    va = story.folder / "va.data"
    missing = _pipeline(story.folder, "missing", va, 'from = "models:/nope@champion"')
    with pytest.raises(
        RegistryError, match=rf"model.from: registered model 'nope' does not exist .*: {MODEL}"
    ):
        run_federation(load_pipeline(missing), RunOptions(), Console(file=io.StringIO()))
    no_alias = _pipeline(story.folder, "no-alias", va, f'from = "models:/{MODEL}@staging"')
    with pytest.raises(
        RegistryError, match=r"has no alias @staging; its versions: 1, 2, 3; its aliases: @challenger"
    ):
        run_federation(load_pipeline(no_alias), RunOptions(), Console(file=io.StringIO()))


def test_warm_start_with_other_features_is_refused_by_every_silo(story: Story) -> None:
    from orchestrator.errors import FederationError

    fewer = _pipeline(story.folder, "fewer", story.folder / "va.data", f'from = "models:/{MODEL}/1"')
    fewer.write_text(fewer.read_text().replace('missing = "impute"', 'missing = "impute"\nignore = ["chol"]'))
    with pytest.raises(
        FederationError, match=rf"models:/{MODEL}/1 has 23 parameters, this pipeline's model has 22"
    ):
        _run(fewer)

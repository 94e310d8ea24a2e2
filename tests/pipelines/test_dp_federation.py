"""Differential privacy end to end (`fedsilo run`'s runner in this process, on the session's
Ray): real Ray, real TenSEAL, Opacus, a real MLflow store.

Record level: the pipeline plans 2 rounds with a budget of epsilon 3; asked for 3 rounds, every
silo refuses the third (its budget is spent) and the run stops cleanly, publishing round 2's
model. Silo level: distributed noise under the packed HE codec.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import example_pipeline_text, kept_in, run_in_process
from tests.pipelines.test_cli import MODEL

pytestmark = pytest.mark.slow
SILOS = ["cleveland", "hungary", "switzerland", "long-beach"]


@dataclass(frozen=True)
class Run:
    folder: Path
    stdout: str
    summary: dict


def _pipeline(folder: Path, name: str, privacy: str, top: str = "", model: str = "") -> Path:
    """The bundled pipeline (2 planned rounds, packed HE) with ``privacy`` lines, top-level lines
    and [model] lines; its store and checkpoints in ``folder``."""
    pipeline = folder / f"{name}.toml"
    text = example_pipeline_text(rounds=f"2\n{top}", he=f'"packed"\n{privacy}', kind=f'"logistic"\n{model}')
    pipeline.write_text(kept_in(text, folder))
    return pipeline


def _run(
    folder: Path, name: str, privacy: str, rounds: int | None = None, top: str = "", model: str = ""
) -> Run:
    """`fedsilo run` in this process (on the session's Ray)."""
    summary, stdout = run_in_process(_pipeline(folder, name, privacy, top, model), rounds)
    return Run(folder, stdout, summary)


@pytest.fixture(scope="module")
def record(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> Run:
    folder = tmp_path_factory.mktemp("dp-record")
    return _run(folder, "record", 'dp = "record"\ntarget_epsilon = 3\ndelta = 1e-3', rounds=3)


def _client(folder: Path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{folder / 'mlruns.db'}")


def test_record_dp_logs_each_silos_epsilon_every_round(record: Run) -> None:
    client = _client(record.folder)
    run_id = record.summary["run_id"]

    for silo in SILOS:
        metric = client.get_metric_history(run_id, f"privacy/epsilon/{silo}")
        history = sorted((m.step, m.value) for m in metric)
        assert [step for step, _ in history] == [1, 2]
        assert 0 < history[0][1] < history[1][1] <= 3.0
    overall = client.get_metric_history(run_id, "privacy/epsilon")
    assert max(m.value for m in overall) == pytest.approx(max(record.summary["privacy"]["epsilon"].values()))


def test_record_dp_stops_cleanly_when_the_budget_is_spent(record: Run) -> None:
    client = _client(record.folder)
    run = client.get_run(record.summary["run_id"])

    assert "stopped after round 2: privacy budget of silo(s) cleveland, hungary, long-beach, switzerland" in (
        " ".join(record.stdout.split())
    )
    assert record.summary["rounds_completed"] == 2
    assert record.summary["stopped"].startswith("stopped after round 2")
    assert run.info.status == "FINISHED"
    assert run.data.tags["fedsilo.stopped"].startswith("stopped after round 2")
    assert client.get_model_version_by_alias(MODEL, "challenger").run_id == run.info.run_id
    text = Path(client.download_artifacts(run.info.run_id, "model_card.md", str(record.folder))).read_text()
    assert "record-level (DP-SGD with Opacus in every silo)" in text
    assert "training stopped early: stopped after round 2" in text


def test_record_dp_version_and_run_carry_privacy_tags(record: Run) -> None:
    client = _client(record.folder)
    version = client.get_model_version_by_alias(MODEL, "challenger")
    tags = version.tags
    run_tags = client.get_run(version.run_id).data.tags

    epsilon = max(record.summary["privacy"]["epsilon"].values())
    assert tags["fedsilo.privacy.dp"] == "record"
    assert float(tags["fedsilo.privacy.epsilon"]) == pytest.approx(epsilon, abs=1e-4)
    assert tags["fedsilo.privacy.epsilon_target"] == "3"
    assert tags["fedsilo.privacy.delta"] == "0.001"
    assert tags["fedsilo.privacy.max_grad_norm"] == "1"
    assert float(tags["fedsilo.privacy.noise_multiplier"]) > 0
    assert tags["fedsilo.privacy.accountant"] == "rdp"
    assert tags["fedsilo.privacy.he.scheme"] == "packed" and tags["fedsilo.privacy.he.value_bits"] == "16"
    assert tags["fedsilo.privacy.contributing_silos"] == ",".join(SILOS)
    assert {k: v for k, v in run_tags.items() if k.startswith("fedsilo.privacy.")} == {
        k: v for k, v in tags.items() if k.startswith("fedsilo.privacy.")
    }


def test_a_dp_warm_start_needs_the_same_dp_and_tags_the_whole_chain(record: Run) -> None:
    """From the record-level run's version: silo-level DP is refused before anything starts
    (what `fedsilo run` exits 2 with); record-level DP trains one round and its version carries
    epsilon and delta over both runs."""
    from pipelines.registry import RegistryError
    from pipelines.spec import load_pipeline
    from pipelines.warmstart import resolve_warm_start

    source = f'from = "models:/{MODEL}@challenger"'
    silo_dp = 'dp = "silo"\nnoise_multiplier = 1.0\ndelta = 1e-3'
    silo = _pipeline(record.folder, "warm-silo", silo_dp, model=source)
    with pytest.raises(RegistryError) as refused:
        resolve_warm_start(load_pipeline(silo), f"sqlite:///{record.folder / 'mlruns.db'}")
    fixed = 'dp = "record"\nnoise_multiplier = 1.0\ndelta = 1e-3'
    warm = _run(record.folder, "warm-record", fixed, rounds=1, model=source)
    client = _client(record.folder)
    first = client.get_model_version(MODEL, "1").tags
    tags = client.get_model_version(MODEL, warm.summary["registered_model"]["version"]).tags

    assert refused.value.exit_code == 2
    said = " ".join(str(refused.value).split())
    assert f"models:/{MODEL}@challenger = version 1 was trained with privacy.dp = 'record'" in said
    total = float(first["fedsilo.privacy.epsilon"]) + float(tags["fedsilo.privacy.epsilon"])
    assert float(tags["fedsilo.privacy.epsilon_total"]) == pytest.approx(total, abs=2e-4)
    assert float(tags["fedsilo.privacy.delta_total"]) == pytest.approx(2e-3)
    assert tags["fedsilo.privacy.chain"] == f"models:/{MODEL}/1"  # the version, not the alias


def test_silo_dp_under_packed_encryption_with_silo_sampling(ray_local: None, tmp_path: Path) -> None:
    """Three of the four silos drawn each round (fraction 0.75): a silo left out spends nothing."""
    run = _run(
        tmp_path,
        "silo",
        'dp = "silo"\ntarget_epsilon = 8\ndelta = 1e-3\nmax_grad_norm = 2.0',
        top="fraction = 0.75",
    )
    client = _client(tmp_path)
    run_id = run.summary["run_id"]

    history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "privacy/epsilon"))
    tags = client.get_model_version_by_alias(MODEL, "challenger").tags
    rounds = run.summary["per_round"]
    trained = {s: sum(s not in r["idle"] for r in rounds) for s in SILOS}
    spent = {s: [m.value for m in client.get_metric_history(run_id, f"privacy/epsilon/{s}")] for s in SILOS}

    assert [step for step, _ in history] == [1, 2] and 0 < history[0][1] < history[1][1] <= 8.0
    assert tags["fedsilo.privacy.dp"] == "silo" and tags["fedsilo.privacy.he.scheme"] == "packed"
    assert tags["fedsilo.privacy.secagg"].startswith("pairwise")  # on by default: 4 silos, packed
    assert tags["fedsilo.privacy.noise_shares_for"] == "3"  # min_silos of the bundled example
    assert run.summary["rounds_completed"] == 2 and run.summary["stopped"] is None
    assert [(r["participants"], len(r["idle"])) for r in rounds] == [(3, 1), (3, 1)]
    assert all(len(spent[s]) == trained[s] for s in SILOS)  # epsilon logged only when it trained
    by_count = {trained[s]: spent[s][-1] for s in SILOS if trained[s]}
    assert all(spent[s][-1] == pytest.approx(by_count[trained[s]]) for s in SILOS if trained[s])
    assert by_count.get(1, 0) < by_count.get(2, 9)  # one round costs less than two


def test_silo_dp_over_a_secure_sum_without_he(ray_local: None, tmp_path: Path) -> None:
    """he = "off" with secagg: the orchestrator sees only the sum of the noised updates, so
    min_silos = 3 silos may each add a third of the noise (refused without secagg)."""
    pipeline = tmp_path / "secure-sum.toml"
    privacy = '"off"\nsecagg = "pairwise"\ndp = "silo"\nnoise_multiplier = 0.5\nmax_grad_norm = 2.0'
    pipeline.write_text(kept_in(example_pipeline_text(rounds="2", he=privacy), tmp_path))

    summary, _ = run_in_process(pipeline)
    tags = _client(tmp_path).get_model_version_by_alias(MODEL, "challenger").tags

    assert summary["rounds_completed"] == 2 and summary["stopped"] is None
    assert [r["participants"] for r in summary["per_round"]] == [4, 4]
    assert tags["fedsilo.privacy.he.scheme"] == "off" and tags["fedsilo.privacy.secagg"].startswith(
        "pairwise"
    )
    assert 0.0 <= summary["final"]["metrics"]["accuracy"] <= 1.0

"""A site's [policy]: each rule refuses by its name with a concrete reason; a compliant run passes."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from privacy.secagg import MaskDeal, MaskRound, UnmaskRequest
from silo.messages import Evaluation, FitConfig, FitIns, FitRes
from sites.config import LoadedSite
from sites.policy import check_answer, check_call, check_terms, metric_names
from sites.terms import RunTerms
from tests.sites.test_config import DIGEST, SITE, load

OTHER_DIGEST = "cd" * 32
TERMS = RunTerms(
    run_id="run-1", pipeline="heart", pipeline_sha256="ef" * 32, task="tabular", model="logistic",
    he="packed", secagg=True, dp="silo", epsilon=4.0, delta=1e-6, min_silos=3, rounds=50, silos=4,
)  # fmt: skip
EVALUATION = Evaluation(
    "cleveland", examples=60, loss_sum=31.5, correct=44, positive_hist=(1, 2), negative_hist=(3, 4)
)
PLAIN = Evaluation("cleveland", examples=60, loss_sum=31.5, correct=44)


@pytest.fixture
def site(tmp_path: Path) -> LoadedSite:
    """SITE: require HE and secagg, epsilon <= 8, delta <= 1e-5, 3 silos, 100 rounds, publish = false."""
    return load(tmp_path, SITE)


def fit(round: int) -> FitIns:
    return FitIns(round=round, global_payload=None, config=FitConfig(local_epochs=1, batch_size=32, lr=0.1))


def test_compliant_run_is_accepted(site: LoadedSite) -> None:
    # Prepare / Execute
    refusals = check_terms(site, TERMS, site.pinned_sha256)
    # Assert
    assert refusals == []


@pytest.mark.parametrize(
    ("change", "rule", "detail"),
    [
        ({"pipeline": "other"}, "pipelines", "pipeline 'other' is not among the pipelines served: ['heart']"),
        ({"task": OTHER_DIGEST}, "approved_tasks", f"the run's task file has sha256 {OTHER_DIGEST}; add it"),
        ({"model": "mylab.nets:make"}, "approved_tasks", "the run's model 'mylab.nets:make' imports code"),
        ({"he": "off"}, "require_he", "the run sends updates unencrypted (he = 'off')"),
        ({"secagg": False}, "require_secagg", "the run sums updates without pairwise masking"),
        ({"epsilon": 10.0}, "max_epsilon", "the run targets epsilon 10.0; this site allows at most 8.0"),
        ({"delta": 1e-3}, "max_delta", "the run targets delta 0.001; this site allows at most 1e-05"),
        ({"min_silos": 2}, "min_silos", "the run sums updates of at least 2 silos; this site requires 3"),
        ({"rounds": 200}, "max_rounds", "the run has 200 rounds; this site serves at most 100"),
    ],
)
def test_each_rule_refuses_by_name(site: LoadedSite, change: dict[str, Any], rule: str, detail: str) -> None:
    # Prepare
    terms = dataclasses.replace(TERMS, **change)
    # Execute
    (refusal,) = check_terms(site, terms, site.pinned_sha256)
    # Assert
    assert (refusal.site, refusal.rule) == ("cleveland", rule)
    assert refusal.detail.startswith(detail)
    assert refusal.message().startswith(f"site 'cleveland' refuses ({rule}): ")


def test_unknown_coordinator_is_refused_unless_listed(tmp_path: Path) -> None:
    # Prepare
    site = load(tmp_path, SITE)
    listed = load(tmp_path / "listed", SITE.replace("coordinators = []", f'coordinators = ["{DIGEST}"]'))
    # Execute
    (refusal,) = check_terms(site, TERMS, DIGEST)
    accepted = check_terms(listed, TERMS, DIGEST.upper())
    # Assert
    assert refusal.rule == "coordinators" and DIGEST in refusal.detail
    assert accepted == []


def test_no_dp_breaks_both_dp_rules(site: LoadedSite) -> None:
    # Prepare
    terms = dataclasses.replace(TERMS, dp="off", epsilon=None, delta=None)
    # Execute
    refusals = check_terms(site, terms, site.pinned_sha256)
    # Assert
    assert [r.rule for r in refusals] == ["max_epsilon", "max_delta"]
    assert (
        refusals[0].detail
        == "the run has no differential privacy (dp = 'off'); this site requires epsilon <= 8.0"
    )
    declared = check_terms(site, dataclasses.replace(TERMS, delta=None), site.pinned_sha256)
    assert [r.detail for r in declared] == ["the run declares no delta; this site requires delta <= 1e-05"]


def test_small_federation_and_every_broken_rule_listed(site: LoadedSite) -> None:
    # Prepare
    terms = dataclasses.replace(TERMS, he="off", secagg=False, min_silos=1, silos=2, rounds=101)
    # Execute
    refusals = check_terms(site, terms, site.pinned_sha256)
    # Assert
    assert [r.rule for r in refusals] == [
        "require_he",
        "require_secagg",
        "min_silos",
        "min_silos",
        "max_rounds",
    ]
    assert refusals[3].detail == "the federation has 2 silos; this site requires sums of 3"


def test_tabular_refused_when_only_task_files_are_approved(tmp_path: Path) -> None:
    # Prepare
    site = load(tmp_path, SITE.replace('approved_tasks = ["tabular", ', "approved_tasks = ["))
    # Execute
    (refusal,) = check_terms(site, TERMS, site.pinned_sha256)
    # Assert
    assert refusal.rule == "approved_tasks" and "built-in tables ('tabular')" in refusal.detail


def test_approved_model_factory_is_served(tmp_path: Path) -> None:
    # Prepare
    site = load(
        tmp_path,
        SITE.replace('approved_tasks = ["tabular", ', 'approved_tasks = ["tabular", "mylab.nets:make", '),
    )
    # Execute / Assert
    assert check_terms(site, dataclasses.replace(TERMS, model="mylab.nets:make"), site.pinned_sha256) == []


def test_fit_beyond_max_rounds(site: LoadedSite) -> None:
    # Prepare / Execute
    refusal = check_call(site, TERMS, "fit", (fit(101),))
    # Assert
    assert refusal is not None and refusal.rule == "max_rounds"
    assert refusal.detail == "round 101 asked; this site serves at most 100 rounds"
    assert check_call(site, TERMS, "fit", (fit(100),)) is None


def test_publish_refused_when_policy_says_no(tmp_path: Path) -> None:
    # Prepare
    refusing = load(tmp_path, SITE)
    publishing = load(tmp_path / "publishing", SITE.replace("publish = false", "publish = true"))
    # Execute
    refusal = check_call(refusing, TERMS, "publish", ())
    # Assert
    assert refusal is not None and refusal.rule == "publish"
    assert check_call(publishing, TERMS, "publish", ()) is None
    assert check_call(refusing, TERMS, "score_models", (("models:/m/1",), "sqlite:///x.db")) is None


def test_scoring_registered_task_models_is_refused_since_it_would_unpickle_code(site: LoadedSite) -> None:
    # Prepare: a run of a task module rather than the tables
    task_run = replace(TERMS, task="ab" * 32)
    args = (("models:/m/1",), "sqlite:///x.db")
    # Execute
    refusal = check_call(site, task_run, "score_models", args)
    # Assert
    assert refusal is not None and refusal.rule == "approved_tasks" and "unpickle" in refusal.detail
    assert check_call(site, TERMS, "score_models", args) is None


def test_masked_sums_with_too_few_members(site: LoadedSite) -> None:
    # Prepare
    deal = MaskDeal(
        session="n/fit/0", members=("a", "cleveland"), threshold=2, sealing={}, orchestrator_key=b""
    )
    unmask = UnmaskRequest(session="n/fit/0", survivors=("cleveland",), dropped=("a", "b"), signature=b"")
    # Execute
    refusal = check_call(site, TERMS, "deal_masks", (deal,))
    # Assert
    assert refusal is not None and refusal.rule == "min_silos"
    assert (
        refusal.detail
        == "deal_masks: the masked sum has 2 member(s) (a, cleveland); this site requires at least 3"
    )
    enough = dataclasses.replace(deal, members=("a", "b", "cleveland"))
    assert check_call(site, TERMS, "deal_masks", (enough,)) is None
    assert check_call(site, TERMS, "unmask", (unmask,)) is not None
    assert check_call(site, TERMS, "encode_staged", ("t", 1.0, MaskRound("n/fit/0", ("a", "b", "c")))) is None


def test_disallowed_metric_is_refused_by_name(site: LoadedSite) -> None:
    # Prepare
    res = FitRes("cleveland", round=3, examples=200, train_loss=0.4, evaluation=EVALUATION)
    # Execute
    refusal = check_answer(site, "fit", res)
    # Assert
    assert refusal is not None and refusal.rule == "allowed_metrics"
    assert (
        refusal.detail
        == "the answer to fit carries metric(s) positive_hist, negative_hist not in allowed_metrics"
    )
    assert check_answer(site, "evaluate", PLAIN) is None
    assert check_answer(site, "score_models", {"models:/m/1": PLAIN, "models:/m/2": EVALUATION}) is not None


def test_all_metrics_allowed_when_unset(tmp_path: Path) -> None:
    # Prepare
    site = load(
        tmp_path, SITE.replace('allowed_metrics = ["loss_sum", "count", "correct", "train_loss"]\n', "")
    )
    # Execute / Assert
    assert check_answer(site, "evaluate", EVALUATION) is None


def test_epsilon_over_the_max_is_not_sent(site: LoadedSite) -> None:
    # Prepare
    res = FitRes("cleveland", round=7, examples=200, train_loss=0.4, evaluation=PLAIN, epsilon=8.5)
    # Execute
    refusal = check_answer(site, "fit", res)
    # Assert
    assert refusal is not None and refusal.rule == "max_epsilon"
    assert refusal.detail == "round 7 would bring this site's epsilon to 8.5; it allows at most 8.0"
    assert check_answer(site, "fit", dataclasses.replace(res, epsilon=7.9)) is None


def test_metric_names() -> None:
    # Prepare
    task = Evaluation("cleveland", examples=5, loss_sum=1.0, correct=0, sums={"mse_sum": 2.0, "count": 5})
    # Execute / Assert
    assert metric_names(PLAIN) == ("loss_sum", "count", "correct")
    assert metric_names(FitRes("cleveland", round=1, evaluation=task)) == ("mse_sum", "count", "train_loss")
    assert metric_names(FitRes("cleveland", round=1)) == ("train_loss",)
    assert metric_names({"a": PLAIN, "b": task}) == ("loss_sum", "count", "correct", "mse_sum")
    assert metric_names(b"payload") == () and metric_names({}) == ()

"""[privacy] differential-privacy settings: impossible ones are refused, by the schema or by
`fedsilo validate` (delta >= 1/n, naming the silo); tags and model card words."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines import build
from pipelines.cli import main
from pipelines.privacy_report import (
    chained_privacy,
    check_warm_start_privacy,
    delta_problems,
    privacy_card,
    privacy_tags,
)
from pipelines.spec import PipelineError, parse_pipeline
from tests.conftest import example_pipeline_text

BASE = """\
name = "demo"
rounds = 3
min_silos = 2

[data]
target = "y"

[[silos]]
name = "a"
path = "a.csv"

[[silos]]
name = "b"
path = "b.csv"

[privacy]
he = "off"
"""


def _parse(privacy: str, training: str = ""):
    base = BASE.replace('he = "off"', 'he = "packed"') if 'dp = "silo"' in privacy else BASE
    return parse_pipeline(base + privacy + training, Path("/p/pipeline.toml"))


def _problems(privacy: str, training: str = "") -> list[str]:
    with pytest.raises(PipelineError) as caught:
        _parse(privacy, training)
    return caught.value.problems


@pytest.mark.parametrize(
    ("privacy", "expected"),
    [
        ('dp = "record"\ntarget_epsilon = 0\n', "toml:19: privacy.target_epsilon: Input should"),
        ('dp = "record"\ntarget_epsilon = -1\n', "privacy.target_epsilon: Input should be greater than 0"),
        ('dp = "record"\ntarget_epsilon = 1\ndelta = 1.0\n', "toml:20: privacy.delta: Input should be less"),
        ('dp = "record"\ntarget_epsilon = 1\ndelta = 0\n', "privacy.delta: Input should be greater than 0"),
        ('dp = "silo"\n', "privacy: privacy.dp = 'silo' needs exactly one of target_epsilon"),
        ('dp = "record"\ntarget_epsilon = 1\nnoise_multiplier = 1\n', "needs exactly one of target_epsilon"),
        ('dp = "record"\nnoise_multiplier = 1\nmax_grad_norm = 0\n', "privacy.max_grad_norm: Input"),
        ('dp = "record"\nnoise_multiplier = 1\naccountant = "moments"\n', "privacy.accountant: Input"),
        ('dp = "laplace"\n', "privacy.dp: Input should be 'off', 'record' or 'silo'"),
    ],
)  # fmt: skip
def test_impossible_dp_settings_are_refused_with_line_and_field(privacy: str, expected: str) -> None:
    problems = _problems(privacy)
    assert any(expected in p for p in problems), problems


def test_record_dp_with_fedprox_is_refused() -> None:
    problems = _problems('dp = "record"\ntarget_epsilon = 8\n', '[training]\nstrategy = "fedprox"\n')
    assert any("does not clip FedProx's proximal term" in p for p in problems), problems


@pytest.mark.parametrize(
    ("privacy", "training", "expected"),
    [
        ('"off"\ndp = "silo"\ntarget_epsilon = 8', "", "the orchestrator would see each update with 1/3 of"),
        ('"packed"\ndp = "silo"\ntarget_epsilon = 8', '"scaffold"', "without SCAFFOLD's drift correction"),
        ('"packed"\ndp = "silo"\ntarget_epsilon = 8', '"fedavg"\nclip_norm = 0.5', "clip after the noise"),
        ('"off"\ndp = "silo"\ntarget_epsilon = 8', '"median"', "picks or sorts single updates"),
    ],
)  # fmt: skip
def test_silo_dp_refuses_what_would_release_a_share_of_the_noise(
    privacy: str, training: str, expected: str
) -> None:
    text = example_pipeline_text(he=privacy, **({"strategy": training} if training else {}))
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(text, Path("/p/pipeline.toml"))
    assert any(expected in p for p in caught.value.problems), caught.value.problems


def test_dp_settings_reach_the_silos_and_the_strategy() -> None:
    loaded = _parse('dp = "silo"\ntarget_epsilon = 3\nmax_grad_norm = 0.5\n')

    specs = build.silo_specs(loaded, dp_state=lambda silo: f"/state/{silo}.json")
    fit = build.strategy(loaded).configure_fit(1)

    assert specs[0].dp.mode == "silo" and specs[0].dp.target_epsilon == 3
    assert specs[0].dp.max_grad_norm == 0.5 and specs[0].dp.planned_rounds == 3 and specs[0].dp.min_silos == 2
    assert specs[1].dp_state_path == "/state/b.json"
    assert fit.weighting == "uniform"
    assert build.strategy(_parse("")).configure_fit(1).weighting == "examples"


def test_delta_must_be_below_one_over_n() -> None:
    record = _parse('dp = "record"\ntarget_epsilon = 3\ndelta = 0.005\n').spec
    silo = _parse('dp = "silo"\ntarget_epsilon = 3\ndelta = 0.5\n').spec

    assert delta_problems(record, {"a": 150, "b": 98}) == []
    problems = delta_problems(record, {"a": 150, "b": 500})  # the larger silo binds: delta < 1/n_k
    assert problems == [
        "silo 'b': privacy.delta = 0.005 is not below 1/500 (its 500 training rows): "
        "choose delta < 0.002, e.g. 0.0001"
    ]
    assert delta_problems(silo, {"a": 5, "b": 5}) == [
        "privacy.delta = 0.5 is not below 1/2 (dp = 'silo' protects each of the 2 silos): "
        "choose delta < 0.5, e.g. 0.01"
    ]


def test_a_tiny_silo_is_held_to_delta_below_one_over_its_rows_too() -> None:
    record = _parse('dp = "record"\ntarget_epsilon = 3\ndelta = 0.2\n').spec
    assert delta_problems(record, {"clinic": 5, "big": 4}) == [
        "silo 'clinic': privacy.delta = 0.2 is not below 1/5 (its 5 training rows): "
        "choose delta < 0.2, e.g. 0.01"
    ]


def test_validate_refuses_delta_naming_the_silos_too_large_for_it(tmp_path: Path, capsys) -> None:
    text = example_pipeline_text(he='"off"\ndp = "record"\ntarget_epsilon = 8\ndelta = 0.005')
    path = tmp_path / "pipeline.toml"
    path.write_text(text)

    code = main(["validate", str(path)])

    err = capsys.readouterr().err
    assert code == 2
    assert "silo 'cleveland': privacy.delta = 0.005 is not below 1/242 (its 242 training rows)" in err
    assert "silo 'hungary': privacy.delta = 0.005 is not below 1/235" in err
    assert "switzerland" not in err and "long-beach" not in err  # 98 and 160 rows: 0.005 < 1/n


def test_tags_and_card_say_what_protects_the_model() -> None:
    spec = _parse('dp = "silo"\ntarget_epsilon = 3\ndelta = 1e-3\nmax_grad_norm = 0.5\n').spec
    summary = {"epsilon": {"a": 1.5, "b": 1.5}, "noise_multiplier": {"a": 4.2}, "contributors": ["a"]}
    codec = {"scheme": "packed", "value_bits": "16"}

    tags = privacy_tags(spec, codec, summary)
    stopped = "stopped after round 2: privacy budget of silo(s) a spent:\n  - a: ..."
    card = privacy_card(spec, summary, stopped)
    off = privacy_card(_parse("").spec, {"contributors": ["a", "b"]}, None)

    assert tags == {
        "fedsilo.privacy.dp": "silo",
        "fedsilo.privacy.he.scheme": "packed",
        "fedsilo.privacy.he.value_bits": "16",
        "fedsilo.privacy.contributing_silos": "a",
        "fedsilo.privacy.secagg": "off",
        "fedsilo.privacy.epsilon": "1.5000",
        "fedsilo.privacy.epsilon_target": "3",
        "fedsilo.privacy.delta": "0.001",
        "fedsilo.privacy.max_grad_norm": "0.5",
        "fedsilo.privacy.clipping": "silo update (L2)",
        "fedsilo.privacy.noise_multiplier": "4.2000",
        "fedsilo.privacy.accountant": "rdp",
        "fedsilo.privacy.noise_shares_for": "2",
    }
    assert "silo-level (distributed noise)" in card
    assert "any 2 silos' shares add up to noise multiplier 4.200" in card
    assert "1.500 of a budget of 3, delta 0.001" in card
    assert "- training stopped early: stopped after round 2: privacy budget of silo(s) a spent:" in card
    assert "- silos that contributed: a" in card
    assert off.startswith("- differential privacy: off") and "contributed: a, b" in off


def test_a_dp_run_starts_only_from_a_version_with_the_same_dp_and_sums_the_chain() -> None:
    off = {"fedsilo.privacy.dp": "off"}
    record = {
        "fedsilo.privacy.dp": "record",
        "fedsilo.privacy.epsilon": "2.0000",
        "fedsilo.privacy.delta": "1e-05",
    }
    this = {"fedsilo.privacy.epsilon": "1.5000", "fedsilo.privacy.delta": "1e-05"}

    refusal = check_warm_start_privacy("record", "models:/m/1", off)
    chained = chained_privacy(this, "models:/m/2", record)
    again = chained_privacy(this, "models:/m/3", {**record, **chained})

    assert refusal is not None and "models:/m/1 was trained with privacy.dp = 'off'" in refusal
    assert check_warm_start_privacy("record", "models:/m/1", {}) is not None  # untagged: not DP
    assert check_warm_start_privacy("silo", "models:/m/2", record) is not None
    assert check_warm_start_privacy("record", "models:/m/2", record) is None
    assert check_warm_start_privacy("off", "models:/m/1", off) is None
    assert chained == {
        "fedsilo.privacy.epsilon_total": "3.5000",
        "fedsilo.privacy.delta_total": "2e-05",
        "fedsilo.privacy.chain": "models:/m/2",
    }
    assert again["fedsilo.privacy.epsilon_total"] == "5.0000"
    assert again["fedsilo.privacy.chain"] == "models:/m/2,models:/m/3"


THIRD_SILO = '[[silos]]\nname = "c"\npath = "c.csv"\n\n'


def _secagg(privacy: str, silos: int = 3):
    text = BASE.replace("[privacy]\n", (THIRD_SILO if silos == 3 else "") + "[privacy]\n")
    return parse_pipeline(text.replace('he = "off"\n', privacy), Path("/p/pipeline.toml"))


def test_secure_aggregation_is_on_by_default_for_packed_he_with_three_silos() -> None:
    # Prepare / Execute
    three = _secagg('he = "packed"\n')
    two = _secagg('he = "packed"\n', silos=2)
    ckks = _secagg('he = "ckks"\n')
    chosen = _secagg('he = "packed"\nsecagg = "pairwise"\nthreshold = 3\n')
    # Assert: the orchestrator is told, with the threshold
    assert three.spec.secagg and not two.spec.secagg and not ckks.spec.secagg
    settings = build.orchestrator_settings(chosen)
    assert settings.secagg and settings.secagg_threshold == 3
    assert not build.orchestrator_settings(_secagg('he = "packed"\nsecagg = "off"\n')).secagg


@pytest.mark.parametrize(
    ("privacy", "expected"),
    [
        ('he = "ckks"\nsecagg = "pairwise"\n', "(CKKS encodes approximate floats); use privacy.he"),
        ('he = "packed"\nthreshold = 4\n', "privacy.threshold = 4 but only 3 silos are listed"),
        ('he = "packed"\nsecagg = "off"\nthreshold = 2\n', "threshold is set but secure aggregation is off"),
        ('he = "packed"\nthreshold = 1\n', "privacy.threshold: Input should be greater than or equal to 2"),
        ('he = "packed"\nsecagg = "all"\n', "privacy.secagg: Input should be 'pairwise' or 'off'"),
    ],
)  # fmt: skip
def test_impossible_secure_aggregation_settings_are_refused(privacy: str, expected: str) -> None:
    with pytest.raises(PipelineError) as caught:
        _secagg(privacy)
    assert any(expected in p for p in caught.value.problems), caught.value.problems


def test_a_robust_rule_with_a_secure_sum_is_refused_saying_why() -> None:
    text = BASE.replace("[privacy]\n", THIRD_SILO + '[training]\nstrategy = "median"\n\n[privacy]\n')
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(text + 'secagg = "pairwise"\n', Path("/p/pipeline.toml"))
    assert any(
        "'median' must see single updates, which secure aggregation hides" in p for p in caught.value.problems
    )

"""Strategy settings in the pipeline file: what `fedsilo validate` refuses, and why."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest

from orchestrator.strategies import ROBUST, FedOpt, Robust, Scaffold
from pipelines.build import strategy
from pipelines.spec import PipelineError, Strategy, parse_pipeline

HEAD = """\
name = "demo"

[data]
target = "y"
"""
SILO = '\n[[silos]]\nname = "s{i}"\npath = "s{i}.csv"\n'


def _text(training: str, he: str = "off", silos: int = 4, min_silos: int = 3) -> str:
    return (
        HEAD.replace("\n\n", f"\nmin_silos = {min_silos}\n\n", 1)
        + "".join(SILO.format(i=i) for i in range(silos))
        + f"\n[training]\n{training}\n"
        + (f'\n[privacy]\nhe = "{he}"\n')
    )


def _problems(text: str) -> list[str]:
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(text, Path("/p/pipeline.toml"))
    return caught.value.problems


@pytest.mark.parametrize("rule", ROBUST)
@pytest.mark.parametrize("he", ["packed", "ckks"])
def test_a_robust_rule_under_he_is_refused_saying_why_and_what_instead(rule: str, he: str) -> None:
    (problem,) = _problems(_text(f'strategy = "{rule}"', he=he))
    assert problem.startswith(f"pipeline.toml:{_text('', he).count(chr(10)) - 3}: training.strategy:")
    assert f"must see single updates, which privacy.he = '{he}' hides" in problem
    assert "use privacy.he = 'off' or strategy = 'fedavg' with training.clip_norm" in problem


def test_krum_needs_more_than_2f_plus_2_silos_in_every_round() -> None:
    (problem,) = _problems(_text('strategy = "krum"\nbyzantine = 1', silos=5, min_silos=4))
    assert "needs more than 4 silos in every round (n > 2f + 2), min_silos is 4" in problem
    assert parse_pipeline(_text('strategy = "krum"\nbyzantine = 1', silos=5, min_silos=5), Path("p.toml"))


@pytest.mark.parametrize("rule", ROBUST)
def test_a_robust_rule_needs_three_answers_in_every_round(rule: str) -> None:
    (problem,) = _problems(_text(f'strategy = "{rule}"', min_silos=2))
    assert "a round of two updates gets their mean" in problem and "set min_silos >= 3" in problem


def test_other_strategy_checks() -> None:
    assert "multi_krum_m = 9 but only 4" in _problems(_text('strategy = "multi_krum"\nmulti_krum_m = 9'))[0]
    assert "use optimizer = 'sgd'" in _problems(_text('strategy = "scaffold"\noptimizer = "adam"'))[0]
    assert "less than 0.5" in _problems(_text('strategy = "trimmed_mean"\ntrim_fraction = 0.5'))[0]
    assert "training.strategy" in _problems(_text('strategy = "fedsgd"'))[0]


def test_strategies_are_built_with_their_hyper_parameters_and_flower_defaults() -> None:
    yogi = strategy(parse_pipeline(_text('strategy = "fedyogi"\nbeta2 = 0.9', he="packed"), Path("p.toml")))
    assert isinstance(yogi, FedOpt) and yogi.server_opt.kind == "fedyogi"
    assert (yogi.server_lr, yogi.beta1, yogi.beta2, yogi.tau) == (0.05, 0.9, 0.9, 1e-3)
    adam = strategy(
        parse_pipeline(_text('strategy = "fedadam"\nserver_lr = 0.3\nclip_norm = 2.0'), Path("p.toml"))
    )
    assert isinstance(adam, FedOpt) and adam.server_opt.eta == 0.3 and adam.clip_norm == 2.0
    scaffold = strategy(parse_pipeline(_text('strategy = "scaffold"', he="packed"), Path("p.toml")))
    assert isinstance(scaffold, Scaffold) and scaffold.payload_length(10) == 20
    assert scaffold.configure_fit(1).scaffold
    krum = strategy(parse_pipeline(_text('strategy = "multi_krum"\nmulti_krum_m = 2'), Path("p.toml")))
    assert isinstance(krum, Robust) and krum.multi_krum_m == 2 and krum.server_opt is None


def test_median_and_trimmed_mean_are_row_weighted_unless_uniform() -> None:
    weighted = strategy(parse_pipeline(_text('strategy = "median"'), Path("p.toml")))
    assert isinstance(weighted, Robust) and weighted.robust_weighting == "examples"
    uniform = strategy(
        parse_pipeline(_text('strategy = "trimmed_mean"\nrobust_weighting = "uniform"'), Path("p.toml"))
    )
    assert isinstance(uniform, Robust) and uniform.robust_weighting == "uniform"
    assert "robust_weighting" in _problems(_text('strategy = "median"\nrobust_weighting = "rows"'))[0]


def test_every_rule_the_orchestrator_has_can_be_named_in_a_pipeline() -> None:
    assert set(ROBUST) <= set(get_args(Strategy))
    gm = strategy(parse_pipeline(_text('strategy = "geometric_median"'), Path("p.toml")))
    assert isinstance(gm, Robust) and gm.name == "geometric_median"

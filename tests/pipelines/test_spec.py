"""Pipeline files: errors name the file, line and field a user must fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.spec import PipelineError, bundled_example, flatten, load_pipeline, parse_pipeline

GOOD = """\
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
path = "/data/b.parquet"

[training]
lr = 0.1
"""


def _problems(text: str) -> list[str]:
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(text, Path("/pipes/pipeline.toml"))
    return caught.value.problems


def test_defaults_and_relative_paths() -> None:
    loaded = parse_pipeline(GOOD, Path("/pipes/pipeline.toml"))
    spec = loaded.spec
    assert spec.privacy.he == "packed" and spec.training.strategy == "fedavg"
    assert spec.experiment == "demo" and spec.registered_model == "demo-model" and spec.publisher == "a"
    assert loaded.silo_path(spec.silos[0]) == "/pipes/a.csv"
    assert loaded.silo_path(spec.silos[1]) == "/data/b.parquet"


def test_bundled_example_is_valid() -> None:
    spec = load_pipeline(bundled_example()).spec
    assert [s.name for s in spec.silos] == ["cleveland", "hungary", "switzerland", "long-beach"]
    assert spec.privacy.he == "packed"


def test_unknown_field_names_line_and_field() -> None:
    assert _problems(GOOD.replace("lr = 0.1", "lrr = 0.1")) == [
        "pipeline.toml:17: training.lrr: unknown field (a typo?)"
    ]


def test_bad_value_names_line_field_and_value() -> None:
    (problem,) = _problems(GOOD.replace("lr = 0.1", "lr = -1"))
    assert problem.startswith("pipeline.toml:17: training.lr: Input should be greater than 0")
    assert "(got -1)" in problem


def test_bad_value_in_the_second_silo_points_at_its_line() -> None:
    (problem,) = _problems(GOOD.replace('name = "b"', 'name = "b c"'))
    assert problem.startswith("pipeline.toml:13: silos.1.name: String should match pattern")


def test_missing_required_field_points_at_its_table() -> None:
    assert _problems(GOOD.replace('target = "y"', "")) == [
        "pipeline.toml:5: data.target: required field is missing"
    ]


def test_choices_are_listed() -> None:
    (problem,) = _problems(GOOD + '\n[privacy]\nhe = "paillier"\n')
    assert problem.startswith("pipeline.toml:20: privacy.he: Input should be 'packed', 'ckks' or 'off'")


def test_duplicate_silo_names() -> None:
    (problem,) = _problems(GOOD.replace('name = "b"', 'name = "a"'))
    assert "silo name(s) ['a'] appear more than once in [[silos]]" in problem


def test_min_silos_above_the_number_of_silos() -> None:
    (problem,) = _problems(GOOD.replace("min_silos = 2", "min_silos = 5"))
    assert "min_silos = 5 but only 2 silos are listed" in problem


def test_several_problems_are_reported_together() -> None:
    problems = _problems(GOOD.replace("rounds = 3", "rounds = 0").replace("lr = 0.1", "lr = 0"))
    assert [p.split(":")[1] for p in problems] == ["2", "17"]


def test_invalid_toml_gives_the_parser_position() -> None:
    (problem,) = _problems(GOOD.replace("rounds = 3", "rounds = "))
    assert "not valid TOML" in problem and "line 2" in problem


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="cannot read the pipeline file"):
        load_pipeline(tmp_path / "missing.toml")


def test_categorical_outside_features_is_refused() -> None:
    text = GOOD.replace('target = "y"', 'target = "y"\nfeatures = ["a"]\ncategorical = ["b"]')
    (problem,) = _problems(text)
    assert "pipeline.toml:5: data: categorical column(s) ['b'] are not in features" in problem


def test_flatten_for_mlflow_params() -> None:
    flat = flatten(parse_pipeline(GOOD, Path("/p/pipeline.toml")).spec)
    assert flat["training.lr"] == "0.1"
    assert flat["silos.1.path"] == "/data/b.parquet"
    assert flat["privacy.ckks.coeff_mod_bit_sizes"] == "[60, 40, 60]"


def test_ckks_parameters_beyond_128_bit_security_are_refused() -> None:
    text = GOOD + "\n[privacy.ckks]\npoly_modulus_degree = 4096\ncoeff_mod_bit_sizes = [60, 40, 60]\n"
    (problem,) = _problems(text)
    assert "add up to 160 bits; poly_modulus_degree = 4096 allows at most 109" in problem
    assert problem.startswith("pipeline.toml:19: privacy.ckks:") and "(got" not in problem


def test_packed_is_the_default_with_headroom_for_the_silos_listed() -> None:
    from pipelines import build

    loaded = parse_pipeline(GOOD, Path("/pipes/pipeline.toml"))
    config = build.he_config(loaded)
    assert config.scheme == "packed" and config.packed.max_silos == 2 and config.packed.lanes == 3


def test_packed_headroom_below_the_silos_listed_is_refused() -> None:
    (problem,) = _problems(GOOD + "\n[privacy.packed]\nmax_silos = 1\n")
    assert "privacy.packed.max_silos = 1 but 2 silos are listed" in problem


def test_packed_values_that_cannot_fit_are_refused() -> None:
    (problem,) = _problems(GOOD + "\n[privacy.packed]\nvalue_bits = 32\nplain_modulus_bits = 30\n")
    assert "32-bit values with headroom for 2 silos do not fit a 30-bit plain modulus" in problem


def test_keys_with_he_off_is_refused() -> None:
    (problem,) = _problems(GOOD + '\n[privacy]\nhe = "off"\nkeys = "keys"\n')
    assert "privacy.keys is set but privacy.he = 'off' uses no keys" in problem


def test_keys_init_writes_keys_for_the_pipelines_parameters(tmp_path: Path) -> None:
    from rich.console import Console

    from pipelines.cli import keys_init
    from privacy.keyfile import read_public_key_file

    pipeline = tmp_path / "pipeline.toml"
    pipeline.write_text(GOOD)
    loaded = load_pipeline(pipeline)
    console = Console(record=True, width=200)
    keys_init(loaded, tmp_path / "keys", console)
    from pipelines import build

    _, key_id = read_public_key_file(tmp_path / "keys" / "he-public.key", build.he_config(loaded))
    assert len(key_id) == 16
    text = console.export_text()
    assert '[privacy]\n  keys = "keys"' in text and "he-secret.key" in text


@pytest.mark.parametrize(("value", "says"), [("0", "greater than 0"), ("1.5", "less than or equal to 1")])
def test_a_fraction_outside_zero_one_names_its_line(value: str, says: str) -> None:
    (problem,) = _problems(GOOD.replace("min_silos = 2", f"min_silos = 2\nfraction = {value}"))
    assert problem.startswith(f"pipeline.toml:4: fraction: Input should be {says}")


def test_a_fraction_reaches_the_orchestrator_with_the_training_seed() -> None:
    from pipelines.build import orchestrator_settings

    text = GOOD.replace("min_silos = 2", "min_silos = 2\nfraction = 0.5").replace(
        "lr = 0.1", "lr = 0.1\nseed = 7"
    )
    settings = orchestrator_settings(parse_pipeline(text, Path("/pipes/pipeline.toml")))
    assert (settings.fraction, settings.selection_seed) == (0.5, 7)

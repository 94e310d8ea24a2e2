"""Registry errors a user can act on: what does not exist is named with what does; an
unreachable server is reported in seconds; a version that cannot be aliased is removed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.registry import ModelRef, Registry, RegistryError, check_reachable
from silo.messages import PublishRequest
from silo.publish import RegistryWriteError, register_version
from tests.conftest import free_port


@pytest.fixture
def store(tmp_path: Path) -> tuple[str, str]:
    """A sqlite store with model "m": versions 1 and 2, @champion on 1. Returns (uri, run id)."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    mlflow.set_tracking_uri(uri)
    # An experiment of this store: the fluent API remembers the last test's active experiment id.
    experiment = mlflow.set_experiment("registry-tests")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "MLmodel").write_text("flavors: {}\n")
    with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
        mlflow.log_artifacts(str(tmp_path / "model"), "model")
    for _ in range(2):
        register_version(PublishRequest(uri, run.info.run_id, "m"), f"runs:/{run.info.run_id}/model")
    mlflow.MlflowClient(uri).set_registered_model_alias("m", "champion", "1")
    return uri, run.info.run_id


def test_model_uris_parse_or_say_how_to_write_them() -> None:
    assert ModelRef.parse("models:/m@champion") == ModelRef("m", alias="champion")
    assert ModelRef.parse("models:/m/3") == ModelRef("m", version="3")
    with pytest.raises(RegistryError, match="use models:/NAME@ALIAS or models:/NAME/VERSION"):
        ModelRef.parse("m@champion")


def test_what_does_not_exist_is_named_with_what_does(store: tuple[str, str]) -> None:
    registry = Registry(store[0])
    assert registry.resolve("models:/m@champion").version == "1"
    with pytest.raises(RegistryError, match=r"registered model 'nope' does not exist .*registered models: m"):
        registry.resolve("models:/nope@champion")
    listing = r"its versions: 1, 2; its aliases: @challenger \(version 2\), @champion \(version 1\)"
    with pytest.raises(RegistryError, match=r"m has no alias @staging; " + listing):
        registry.resolve("models:/m@staging")
    with pytest.raises(RegistryError, match=r"m has no version 7; its versions: 1, 2"):
        registry.resolve("models:/m/7")


def test_promoting_a_missing_version_lists_the_versions(store: tuple[str, str], capsys) -> None:
    code = main(["promote", "m", "9", "--tracking-uri", store[0]])
    err = capsys.readouterr().err
    assert code == 2 and "m has no version 9; its versions: 1, 2" in err and "Traceback" not in err


def test_an_unreachable_tracking_server_is_reported_in_seconds(capsys) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    code = main(["review", "m", "--tracking-uri", uri])
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 1 and f"cannot reach the MLflow tracking server at {uri}" in err
    assert "after 4 attempts with backoff" in err and elapsed < 15
    with pytest.raises(RegistryError):
        check_reachable(uri, attempts=1)


def test_a_version_whose_alias_cannot_be_set_is_deleted(store: tuple[str, str]) -> None:
    import mlflow

    uri, run_id = store
    request = PublishRequest(uri, run_id, "m", alias="v1")  # MLflow reserves v<number> aliases
    with pytest.raises(
        RegistryWriteError, match=r"could not set @v1 on m version 3, so the version was deleted"
    ):
        register_version(request, f"runs:/{run_id}/model")
    versions = mlflow.MlflowClient(uri).search_model_versions("name='m'")
    assert sorted(int(v.version) for v in versions) == [1, 2]


def _loaded(uri: str, **replace: str):
    from pipelines.spec import parse_pipeline
    from tests.conftest import example_pipeline_text

    replace.setdefault("registered_model", '"m"')
    text = example_pipeline_text(**replace).replace("sqlite:///mlruns.db", uri)
    return parse_pipeline(text, Path("pipeline.toml"))


def test_a_scheduled_run_warm_starts_from_the_champion_when_there_is_one(store: tuple[str, str]) -> None:
    from pipelines.warmstart import with_champion_warm_start

    warm = with_champion_warm_start(_loaded(store[0]))
    assert warm.spec.model.from_ == "models:/m@champion"
    cold = with_champion_warm_start(_loaded(store[0], registered_model='"never-registered"'))
    assert cold.spec.model.from_ is None
    pinned = with_champion_warm_start(_loaded(store[0], kind='"logistic"\nfrom = "models:/m/2"'))
    assert pinned.spec.model.from_ == "models:/m/2"  # an explicit source is kept


def test_the_scheduler_prepares_a_warm_start_and_creates_no_store(
    store: tuple[str, str], tmp_path: Path
) -> None:
    from pipelines.schedule import prepare_scheduled

    assert prepare_scheduled(_loaded(store[0])).spec.model.from_ == "models:/m@champion"
    absent = f"sqlite:///{tmp_path / 'elsewhere' / 'none.db'}"
    (tmp_path / "elsewhere").mkdir()
    assert prepare_scheduled(_loaded(absent)).spec.model.from_ is None
    assert not (tmp_path / "elsewhere" / "none.db").exists()


def test_evaluating_a_missing_version_stops_before_any_silo_starts(
    store: tuple[str, str], tmp_path: Path, capsys
) -> None:
    from tests.conftest import example_pipeline_text

    pipeline = tmp_path / "pipeline.toml"
    pipeline.write_text(
        example_pipeline_text(registered_model='"m"').replace("sqlite:///mlruns.db", store[0])
    )
    code = main(["evaluate", str(pipeline), "--model", "models:/m/5", "--against", "models:/m@champion"])
    err = capsys.readouterr().err
    assert code == 2 and "m has no version 5; its versions: 1, 2" in err and "Traceback" not in err

"""`fedsilo export kuberay`: the manifest checked against KubeRay's documented fields."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from pipelines import kuberay
from pipelines.cli import main
from pipelines.spec import PipelineError, bundled_example, parse_pipeline

SCHEMA = yaml.safe_load((Path(__file__).parent / "kuberay" / "raycronjob.schema.yaml").read_text())
SCHEDULE = '\n[schedule]\ncron = "30 2 * * 1-5"\ntimezone = "Europe/Zurich"\n'


def _example(schedule: str = SCHEDULE) -> Any:
    # The bundled example as it is (relative silo paths), in its own folder, plus a schedule.
    return parse_pipeline(bundled_example().read_text() + schedule, bundled_example())


def _validate(resource: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(resource)


def test_raycronjob_matches_kuberay_schema_and_the_pipeline() -> None:
    loaded = _example()

    config_map, cron = yaml.safe_load_all(kuberay.to_yaml(kuberay.manifests(loaded, "reg/fedsilo:1")))

    _validate(cron)
    assert config_map["kind"] == "ConfigMap" and config_map["data"]["pipeline.toml"] == loaded.text
    spec = cron["spec"]
    assert (spec["schedule"], spec["timeZone"]) == ("30 2 * * 1-5", "Europe/Zurich")
    job = spec["jobTemplate"]
    assert job["entrypoint"].startswith("fedsilo run /fedsilo/pipeline/pipeline.toml --address auto")
    assert job["shutdownAfterJobFinishes"] is True
    cluster = job["rayClusterSpec"]
    head_volume = cluster["headGroupSpec"]["template"]["spec"]["volumes"][0]
    assert head_volume["configMap"]["name"] == config_map["metadata"]["name"]
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert set(groups) == {"silo-cleveland", "silo-hungary", "silo-switzerland", "silo-long-beach"}
    for silo in loaded.spec.silos:
        group = groups[f"silo-{silo.name}"]
        # rayStartParams holds `ray start --resources` as a quoted JSON string, the way KubeRay documents it
        resources = json.loads(json.loads(group["rayStartParams"]["resources"]))
        assert resources == {f"silo:{silo.name}": 1}
        pod = group["template"]["spec"]
        assert pod["nodeSelector"] == {"fedsilo/org": silo.name}
        (mount,) = pod["containers"][0]["volumeMounts"]
        # a relative path: the folder beside the pipeline file
        assert mount["mountPath"] == "/fedsilo/pipeline" and mount["readOnly"] is True
        assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == f"heart-disease-{silo.name}-data"


def test_schema_refuses_a_misspelt_field() -> None:
    (_, cron) = kuberay.manifests(_example(), "reg/fedsilo:1")
    cron["spec"]["jobTemplate"]["shutdownAfterJobFinish"] = cron["spec"]["jobTemplate"].pop(
        "shutdownAfterJobFinishes"
    )
    with pytest.raises(jsonschema.ValidationError, match="shutdownAfterJobFinish"):
        _validate(cron)


def test_rayjob_kind_carries_the_schedule_with_its_time_zone() -> None:
    (_, job) = kuberay.manifests(_example(), "reg/fedsilo:1", kind="rayjob", namespace="hospitals")

    rayjob_schema = {"$defs": SCHEMA["$defs"], "$ref": "#/$defs/rayJobSpec"}
    jsonschema.Draft202012Validator(rayjob_schema).validate(job["spec"])
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert job["spec"]["schedule"] == "CRON_TZ=Europe/Zurich 30 2 * * 1-5"
    assert job["metadata"]["namespace"] == "hospitals"


def test_absolute_silo_paths_mount_their_own_folder() -> None:
    text = bundled_example().read_text().replace('path = "processed.va.data"', 'path = "/srv/va/heart.csv"')
    loaded = parse_pipeline(text + SCHEDULE, bundled_example())
    (_, cron) = kuberay.manifests(loaded, "img")
    groups = {g["groupName"]: g for g in cron["spec"]["jobTemplate"]["rayClusterSpec"]["workerGroupSpecs"]}
    (mount,) = groups["silo-long-beach"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert mount["mountPath"] == "/srv/va"


def test_seconds_field_and_missing_schedule_are_refused() -> None:
    with pytest.raises(PipelineError, match="KubeRay takes 5-field cron"):
        kuberay.manifests(_example('\n[schedule]\ncron = "* * * * * */10"\n'), "img")
    with pytest.raises(PipelineError, match=r"no \[schedule\] section"):
        kuberay.manifests(_example(""), "img")


def test_cli_writes_the_manifest(tmp_path: Path) -> None:
    pipeline = tmp_path / "pipeline.toml"
    pipeline.write_text(bundled_example().read_text() + SCHEDULE)
    out = tmp_path / "cron.yaml"

    code = main(["export", "kuberay", str(pipeline), "-o", str(out), "--image", "reg/fedsilo:1"])

    assert code == 0
    documents = list(yaml.safe_load_all(out.read_text()))
    _validate(documents[1])
    assert (
        documents[1]["spec"]["jobTemplate"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"][
            "containers"
        ][0]["image"]
        == "reg/fedsilo:1"
    )

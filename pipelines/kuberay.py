"""A KubeRay manifest that runs a pipeline on its schedule on Kubernetes.

    fedsilo export kuberay pipeline.toml -o fedsilo-cron.yaml --image registry.example/fedsilo:0.1.0
    kubectl apply -f fedsilo-cron.yaml

Writes a ConfigMap holding the pipeline file and a ``RayCronJob`` (ray.io/v1, KubeRay >= 1.6,
alpha: ``spec.schedule``, ``spec.timeZone``, ``spec.jobTemplate`` = a RayJob spec), or with
``--kind rayjob`` a ``RayJob`` with ``spec.schedule`` (older operators; the time zone goes into
the schedule as ``CRON_TZ=``). Each run makes a RayCluster: a head that runs the driver and the
orchestrator, and one worker group per silo (``silo-<name>``) whose node offers the custom
resource ``silo:<name>`` (what pipelines/placement.py pins the silo to), scheduled on the
organization's Kubernetes nodes (``nodeSelector fedsilo/org: <name>``), with the silo's data
from the PersistentVolumeClaim ``<pipeline>-<silo>-data`` (read-only) mounted where the
pipeline's path for that silo resolves. Token authentication (``authOptions``) is on.
"""

from __future__ import annotations

import math
import re
from pathlib import PurePosixPath
from typing import Any, Literal

import yaml

from pipelines.spec import LoadedPipeline, PipelineError, SiloSection

PIPELINE_DIR = PurePosixPath("/fedsilo/pipeline")  # where pods see the pipeline file
Kind = Literal["raycronjob", "rayjob"]


def _k8s_name(text: str) -> str:
    """A DNS-1123 name (lower case, digits, '-'), at most 63 characters."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return name[:63].rstrip("-") or "fedsilo"


def _data_folder(silo: SiloSection) -> PurePosixPath:
    """The folder a silo's data file is in, as pods see it (relative paths: beside the pipeline)."""
    path = PurePosixPath(silo.path)
    return (path if path.is_absolute() else PIPELINE_DIR / path).parent


def _worker_group(loaded: LoadedPipeline, silo: SiloSection, image: str) -> dict[str, Any]:
    res = loaded.spec.resources
    cpus = max(1, math.ceil(res.cpus_per_silo))
    gpus = math.ceil(res.gpus_per_silo) if isinstance(res.gpus_per_silo, float | int) else 0
    limits: dict[str, Any] = {"cpu": str(cpus), "memory": "4Gi"}
    # KubeRay's rayStartParams form of `ray start --resources '{"silo:<name>": 1}'`.
    params = {"num-cpus": str(cpus), "resources": '"{\\"silo:' + silo.name + '\\": 1}"'}
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
        params["num-gpus"] = str(gpus)
    claim = f"{_k8s_name(loaded.spec.name)}-{_k8s_name(silo.name)}-data"
    return {
        "groupName": _k8s_name(f"silo-{silo.name}"),
        "replicas": 1,
        "minReplicas": 1,
        "maxReplicas": 1,
        "rayStartParams": params,
        "template": {
            "spec": {
                # The organization's own Kubernetes nodes (label them: fedsilo/org=<silo>).
                "nodeSelector": {"fedsilo/org": silo.name},
                "containers": [
                    {
                        "name": "ray-worker",
                        "image": image,
                        "resources": {"requests": dict(limits), "limits": limits},
                        "volumeMounts": [
                            {"name": "silo-data", "mountPath": str(_data_folder(silo)), "readOnly": True}
                        ],
                    }
                ],
                "volumes": [
                    {"name": "silo-data", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
                ],
            }
        },
    }


def _job_spec(loaded: LoadedPipeline, image: str, config_map: str, ray_version: str) -> dict[str, Any]:
    pipeline_file = PIPELINE_DIR / "pipeline.toml"
    entrypoint = f"fedsilo run {pipeline_file} --address auto --tag fedsilo.trigger=kuberay --from-champion"
    mount: dict[str, Any] = {"name": "pipeline", "mountPath": str(pipeline_file), "subPath": "pipeline.toml"}
    mount["readOnly"] = True
    head = {
        "rayStartParams": {"num-cpus": "1", "dashboard-host": "0.0.0.0"},
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "ray-head",
                        "image": image,
                        "resources": {
                            "requests": {"cpu": "1", "memory": "4Gi"},
                            "limits": {"cpu": "1", "memory": "4Gi"},
                        },
                        "ports": [
                            {"containerPort": 6379, "name": "gcs-server"},
                            {"containerPort": 8265, "name": "dashboard"},
                        ],
                        "volumeMounts": [mount],
                    }
                ],
                "volumes": [{"name": "pipeline", "configMap": {"name": config_map}}],
            }
        },
    }
    return {
        "entrypoint": entrypoint,
        "submissionMode": "K8sJobMode",
        "shutdownAfterJobFinishes": True,  # a fresh cluster per run; nothing stays up between runs
        "ttlSecondsAfterFinished": 600,
        "backoffLimit": 0,
        "metadata": {"fedsilo.pipeline": loaded.spec.name},
        "rayClusterSpec": {
            "rayVersion": ray_version,
            "authOptions": {"mode": "token"},  # KubeRay >= 1.5.1
            "headGroupSpec": head,
            "workerGroupSpecs": [_worker_group(loaded, s, image) for s in loaded.spec.silos],
        },
    }


def manifests(
    loaded: LoadedPipeline, image: str, kind: Kind = "raycronjob", namespace: str | None = None
) -> list[dict[str, Any]]:
    """The ConfigMap with the pipeline file, and the RayCronJob (or scheduled RayJob)."""
    import ray

    schedule = loaded.spec.schedule
    if schedule is None:
        raise PipelineError(loaded.path, [f"{loaded.path.name}: schedule: no [schedule] section to export"])
    if not schedule.cron.startswith("@") and len(schedule.cron.split()) != 5:
        raise PipelineError(
            loaded.path,
            [f"{loaded.path.name}: schedule.cron: KubeRay takes 5-field cron expressions; "
             f"{schedule.cron!r} has a seconds field"],
        )  # fmt: skip
    name = _k8s_name(f"fedsilo-{loaded.spec.name}")
    meta: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/part-of": "fedsilo"}}
    if namespace:
        meta["namespace"] = namespace
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {**meta, "name": f"{name}-pipeline"},
        "data": {"pipeline.toml": loaded.text},
    }
    job = _job_spec(loaded, image, f"{name}-pipeline", ray.__version__)
    if kind == "raycronjob":
        resource = {
            "apiVersion": "ray.io/v1",
            "kind": "RayCronJob",
            "metadata": meta,
            "spec": {"schedule": schedule.cron, "timeZone": schedule.timezone, "jobTemplate": job},
        }
    else:
        job["schedule"] = f"CRON_TZ={schedule.timezone} {schedule.cron}"
        resource = {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": meta, "spec": job}
    return [config_map, resource]


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the pipeline file in the ConfigMap) as readable ``|`` blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value and not any(line != line.rstrip() for line in value.splitlines()) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(documents: list[dict[str, Any]], header: str = "") -> str:
    body = yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=110)
    return header + body


def header(loaded: LoadedPipeline, kind: Kind) -> str:
    claims = ", ".join(f"{_k8s_name(loaded.spec.name)}-{_k8s_name(s.name)}-data" for s in loaded.spec.silos)
    what = "RayCronJob, KubeRay >= 1.6" if kind == "raycronjob" else "RayJob with a schedule"
    lines = [
        f"Pipeline {loaded.spec.name!r} on KubeRay ({what}).",
        f"Written by `fedsilo export kuberay {loaded.path.name}`. Before `kubectl apply -f`:",
        "  - an image with fedsilo installed (--image), the same version on every node;",
        "  - label each organization's Kubernetes nodes fedsilo/org=<silo>;",
        f"  - one read-only PersistentVolumeClaim per silo with its data: {claims};",
        "  - [tracking] mlflow_uri must be a server all pods reach (http://...), not a sqlite file.",
    ]  # fmt: skip
    return "".join(f"# {line}\n" for line in lines)

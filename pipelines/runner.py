"""Run one federation: start Ray actors, drive rounds, log everything to MLflow.

fedsilo run                       # the bundled four-hospital example
fedsilo run my_pipeline.toml --summary-json summary.json
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import ray
from rich.console import Console

from orchestrator.actor import Orchestrator, failure_reason
from orchestrator.errors import FederationError, SetupFailed, SiloFailure
from orchestrator.metrics import GlobalEval
from orchestrator.records import SetupReport
from pipelines import build
from pipelines.console import round_progress, setup_table, summary_table
from pipelines.report import RunSummary, metrics_figure, model_card
from pipelines.spec import LoadedPipeline
from pipelines.tracking import RunTracker, resolve_tracking_uri
from silo.actor import SiloWorker
from silo.messages import PublishRequest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    address: str | None = None  # join an existing Ray cluster; None starts a local one
    rounds: int | None = None  # overrides the pipeline's rounds
    log_to_driver: bool = False  # stream actor logs into this terminal


def unwrap(err: BaseException) -> BaseException:
    """The domain error inside a Ray task error, so users see our message, not Ray's traceback."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, BaseException) else err


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, not minutes, when nothing listens at a host:port address."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and other forms: leave them to Ray
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise FederationError(
            f"cannot join the Ray cluster at {address}: nothing answers there ({err.strerror or err}). "
            "Start one with infra/ray-head.sh, or leave out --address to run on a local Ray."
        ) from None


def _join_cluster(address: str, namespace: str, log_to_driver: bool) -> None:
    """Join an existing cluster (the CLI has already chosen the auth mode: `prepare_ray_auth`)."""
    _check_reachable(address)
    try:
        ray.init(address=address, namespace=namespace, log_to_driver=log_to_driver)
    except ConnectionError as err:
        raise FederationError(
            f"cannot join the Ray cluster at {address}: {err}. Is it running (`ray status --address "
            f"{address}`)? If it uses token authentication, set RAY_AUTH_TOKEN or ~/.ray/auth_token."
        ) from None


def _start_ray(loaded: LoadedPipeline, options: RunOptions) -> bool:
    if ray.is_initialized():
        return False
    namespace = loaded.spec.name
    if options.address:
        _join_cluster(options.address, namespace, options.log_to_driver)
    else:
        ray.init(
            address="local",  # always a fresh local instance, never someone else's cluster
            num_cpus=max(2, os.cpu_count() or 2),
            namespace=namespace,
            include_dashboard=False,
            log_to_driver=options.log_to_driver,
            _node_ip_address="127.0.0.1",
        )
    return True


def _start_actors(loaded: LoadedPipeline) -> tuple[dict[str, Any], Any]:
    spec = loaded.spec
    resources = spec.resources
    namespace = ray.get_runtime_context().namespace
    silo_cls = ray.remote(SiloWorker)
    silos = {
        s.name: silo_cls.options(
            name=f"silo:{s.name}",
            namespace=namespace,
            num_cpus=resources.cpus_per_silo,
            num_gpus=resources.gpus_per_silo,
            max_restarts=resources.silo_restarts,
        ).remote(s)
        for s in build.silo_specs(loaded)
    }
    orchestrator = (
        ray.remote(Orchestrator)
        .options(name="orchestrator", namespace=namespace, num_cpus=resources.orchestrator_cpus)
        .remote(silos, build.strategy(loaded), build.orchestrator_settings(loaded))
    )
    return silos, orchestrator


def _get(ref: Any) -> Any:
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        cause = unwrap(err)
        if isinstance(cause, FederationError):
            raise cause from None
        raise FederationError(failure_reason(err)) from None
    except ray.exceptions.RayActorError as err:
        raise SetupFailed("the orchestrator", [SiloFailure("orchestrator", failure_reason(err))]) from None


def run_federation(
    loaded: LoadedPipeline, options: RunOptions | None = None, console: Console | None = None
) -> RunSummary:
    options = options or RunOptions()
    console = console or Console()
    spec = loaded.spec
    rounds = options.rounds or spec.rounds
    wall = time.perf_counter()
    started_ray = _start_ray(loaded, options)
    tracking_uri = resolve_tracking_uri(spec.tracking.mlflow_uri)
    tracker = RunTracker(tracking_uri, spec.experiment, f"{spec.name}-{datetime.now():%Y%m%d-%H%M%S}")
    summary = RunSummary(
        run_id=tracker.run_id,
        tracking_uri=tracking_uri,
        experiment=spec.experiment,
        rounds=rounds,
        silos=[s.name for s in spec.silos],
        he=spec.privacy.he,
    )
    silos: dict[str, Any] = {}
    orchestrator = None
    ok = False
    try:
        tracker.log_pipeline(loaded)
        console.print(
            f"[bold]fedsilo[/] federation [cyan]{spec.name}[/]: {len(spec.silos)} silos, {rounds} rounds, "
            f"HE {spec.privacy.he}, MLflow run {tracker.run_id} at {tracking_uri}"
        )
        setup_start = time.perf_counter()
        silos, orchestrator = _start_actors(loaded)
        with console.status("setting up: reading silo data, exchanging keys, federated statistics"):
            setup: SetupReport = _get(orchestrator.setup.remote())
        summary.setup_seconds = time.perf_counter() - setup_start  # actor start-up included
        tracker.log_setup(setup, summary.setup_seconds)
        summary.model_parameters = setup.n_parameters
        console.print(setup_table(setup))
        history: list[GlobalEval] = []

        def record_eval(result: GlobalEval) -> None:
            tracker.log_eval(result)
            summary.add_eval(result)
            history.append(result)

        with round_progress(console) as progress:
            task = progress.add_task("rounds", total=rounds, status="")
            for server_round in range(1, rounds + 1):
                record = _get(orchestrator.run_round.remote(server_round))
                tracker.log_round(record)
                summary.add_round(record)
                if record.incoming is not None:
                    record_eval(record.incoming)
                status = f"{len(record.participants)}/{len(spec.silos)} silos, {record.seconds:.2f}s"
                if history:
                    status += f", acc {history[-1].accuracy:.3f} (after round {history[-1].after_round})"
                progress.update(task, advance=1, status=status)
        final: GlobalEval = _get(orchestrator.evaluate.remote())
        record_eval(final)
        summary.finish(final)
        tracker.log_figure(metrics_figure(history), "metrics.png")
        tracker.flush()  # the publishing silo writes to the same run next
        publish_start = time.perf_counter()
        with console.status(f"silo {spec.publisher} is publishing the model to the registry"):
            request = PublishRequest(
                tracking_uri=tracking_uri,
                run_id=tracker.run_id,
                registered_model=spec.registered_model,
                version_tags={
                    "fedsilo.run_id": tracker.run_id,
                    "fedsilo.silos": ",".join(summary.silos),
                    "fedsilo.he": spec.privacy.he,
                    "fedsilo.dp": "off",
                },
            )
            published = _get(orchestrator.publish.remote(spec.publisher, request))
        summary.publish_seconds = time.perf_counter() - publish_start
        summary.registered_model = {
            "name": published.name,
            "version": published.version,
            "alias": published.alias,
        }
        summary.wall_seconds = time.perf_counter() - wall
        tracker.log_text(model_card(loaded, setup, summary), "model_card.md")
        tracker.log_dict(summary.to_dict(), "summary.json")
        console.print(summary_table(summary))
        console.print(
            f"registered [bold]{published.name}[/] version {published.version} as @{published.alias}; "
            f"load it with mlflow.pyfunc.load_model('models:/{published.name}@{published.alias}')"
        )
        ok = True
        return summary
    finally:
        summary.wall_seconds = time.perf_counter() - wall
        tracker.finish(ok)
        for handle in [*silos.values(), *([orchestrator] if orchestrator is not None else [])]:
            ray.kill(handle)
        if started_ray:
            ray.shutdown()


def write_summary(summary: RunSummary, path: Path) -> None:
    import json

    path.write_text(json.dumps(summary.to_dict(), indent=2))

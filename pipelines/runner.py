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
from orchestrator.errors import FederationError
from orchestrator.metrics import GlobalEval
from orchestrator.records import OrchestratorState, SetupReport
from pipelines import build, checkpoint, placement
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
    resume: str | None = None  # an MLflow run id whose checkpoint to continue from


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


class _Federation:
    """The actors of one run. The orchestrator can be replaced (it died, or the run resumes)
    from the last state: silos keep or reload the run's HE key, and set-up runs again."""

    def __init__(self, loaded: LoadedPipeline, run_id: str, checkpoints: Path, resume: bool) -> None:
        spec = loaded.spec
        self._loaded = loaded
        self._namespace = ray.get_runtime_context().namespace
        self.placement = placement.plan(spec, ray.cluster_resources())
        silo_cls = ray.remote(SiloWorker)

        def backup(silo: str) -> str:
            return checkpoint.key_backup_path(checkpoints, run_id, silo)

        specs = build.silo_specs(loaded, backup, resume)
        self.silos: dict[str, Any] = {
            s.name: silo_cls.options(
                name=f"silo:{s.name}",
                namespace=self._namespace,
                num_cpus=self.placement[s.name].num_cpus,
                num_gpus=self.placement[s.name].num_gpus,
                resources=self.placement[s.name].resources,
                max_restarts=spec.resources.silo_restarts,
            ).remote(s)
            for s in specs
        }
        self.orchestrator: Any = None
        self._wait_placed(spec.resources.placement_timeout_s)

    def _wait_placed(self, timeout: float) -> None:
        """Every silo placed and started within ``timeout``, or a clear error naming the silos."""
        refs = {h.status.remote(): name for name, h in self.silos.items()}
        ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
        failed: list[str] = []
        for ref in ready:
            try:
                ray.get(ref)
            except ray.exceptions.RayError as err:
                failed.append(f"silo {refs[ref]!r} failed to start: {failure_reason(err)}")
        failed += [
            f"silo {refs[r]!r} was not placed within {timeout:g}s: no node has free "
            f"{{{self.placement[refs[r]].demand()}}}"
            for r in pending
        ]
        if failed:
            raise placement.PlacementError("\n  ".join(["silos could not start:", *failed]))

    def start_orchestrator(self, known_key: tuple[bytes, str] | None) -> SetupReport:
        if self.orchestrator is not None:
            ray.kill(self.orchestrator)
        settings = build.orchestrator_settings(self._loaded, known_key)
        actor = ray.remote(Orchestrator).options(
            name="orchestrator",
            namespace=self._namespace,
            num_cpus=self._loaded.spec.resources.orchestrator_cpus,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.orchestrator = actor.remote(self.silos, build.strategy(self._loaded), settings)
                break
            except ValueError:  # a killed orchestrator's name is released a moment after it died
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        return _get(self.orchestrator.setup.remote())

    def stop(self) -> None:
        for handle in [*self.silos.values(), *([self.orchestrator] if self.orchestrator is not None else [])]:
            ray.kill(handle)


def _get(ref: Any) -> Any:
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as err:
        return _get_raise(err)


def _check_resumable(tracking_uri: str, resumed: checkpoint.Checkpoint, rounds: int) -> None:
    from mlflow.tracking import MlflowClient

    run = MlflowClient(tracking_uri).get_run(resumed.run_id)
    if resumed.orchestrator.round >= rounds and run.info.status == "FINISHED":
        raise checkpoint.CheckpointError(
            f"run {resumed.run_id} already finished all {rounds} rounds: nothing to resume "
            "(pass a larger --rounds to train on)"
        )


def _known_key(state: OrchestratorState) -> tuple[bytes, str] | None:
    """The HE key the silos hold, as the next orchestrator needs it (None with he = "off")."""
    return (state.public_context, state.key_id) if state.public_context is not None else None


def _orchestrator_died(err: BaseException) -> bool:
    return isinstance(err, ray.exceptions.RayActorError) and not isinstance(err, ray.exceptions.RayTaskError)


ORCHESTRATOR_RECOVERIES = 2


def run_federation(
    loaded: LoadedPipeline, options: RunOptions | None = None, console: Console | None = None
) -> RunSummary:
    options = options or RunOptions()
    console = console or Console()
    spec = loaded.spec
    rounds = options.rounds or spec.rounds
    wall = time.perf_counter()
    checkpoints = Path(spec.tracking.checkpoints).expanduser().resolve()
    resumed = checkpoint.load(checkpoints, options.resume) if options.resume else None
    tracking_uri = resolve_tracking_uri(spec.tracking.mlflow_uri)
    if resumed is not None:
        _check_resumable(tracking_uri, resumed, rounds)
    started_ray = _start_ray(loaded, options)
    tracker = RunTracker(
        tracking_uri, spec.experiment, f"{spec.name}-{datetime.now():%Y%m%d-%H%M%S}", run_id=options.resume
    )
    summary = RunSummary.from_dict(resumed.summary) if resumed else RunSummary(
        run_id=tracker.run_id,
        tracking_uri=tracking_uri,
        experiment=spec.experiment,
        rounds=rounds,
        silos=[s.name for s in spec.silos],
        he=spec.privacy.he,
    )  # fmt: skip
    summary.rounds = rounds
    federation: _Federation | None = None
    ok = False
    try:
        if resumed is None:
            tracker.log_pipeline(loaded)
        else:
            tracker.resumed(resumed.orchestrator.round)
        done = resumed.orchestrator.round if resumed else 0
        console.print(
            f"[bold]fedsilo[/] federation [cyan]{spec.name}[/]: {len(spec.silos)} silos, {rounds} rounds"
            + (f" (resuming after round {done})" if resumed else "")
            + f", HE {spec.privacy.he}, MLflow run {tracker.run_id} at {tracking_uri}"
        )
        setup_start = time.perf_counter()
        federation = _Federation(loaded, tracker.run_id, checkpoints, resume=resumed is not None)
        known = _known_key(resumed.orchestrator) if resumed else None
        with console.status("setting up: reading silo data, exchanging keys, federated statistics"):
            setup: SetupReport = federation.start_orchestrator(known)
            if resumed:
                _get(federation.orchestrator.restore.remote(resumed.orchestrator))
        summary.setup_seconds = time.perf_counter() - setup_start  # actor start-up included
        tracker.log_setup(setup, summary.setup_seconds)
        summary.model_parameters = setup.n_parameters
        for ready in setup.ready:
            summary.per_silo.setdefault(ready.silo, {}).update({"node": ready.node, "device": ready.device})
        console.print(setup_table(setup))
        if resumed and resumed.last_record is not None:
            tracker.ensure_round_logged(resumed.last_record)
        state: OrchestratorState = _get(federation.orchestrator.state.remote())
        latest: list[GlobalEval] = []  # the newest evaluation, for the progress line

        def record_eval(result: GlobalEval) -> None:
            tracker.log_eval(result)
            summary.add_eval(result)
            latest[:] = [result]

        recoveries = 0
        with round_progress(console) as progress:
            task = progress.add_task("rounds", total=rounds, completed=done, status="")
            server_round = done + 1
            while server_round <= rounds:
                try:
                    record = ray.get(federation.orchestrator.run_round.remote(server_round))
                except ray.exceptions.RayError as err:
                    if not _orchestrator_died(err) or recoveries >= ORCHESTRATOR_RECOVERIES:
                        return _get_raise(err)
                    recoveries += 1
                    logger.warning("the orchestrator died in round %d; starting a new one", server_round)
                    federation.start_orchestrator(_known_key(state))
                    _get(federation.orchestrator.restore.remote(state))
                    continue
                summary.add_round(record)
                state = _get(federation.orchestrator.state.remote())
                saved = checkpoint.Checkpoint(tracker.run_id, state, summary.to_dict(), record)
                checkpoint.save(checkpoints, saved)
                tracker.log_round(record)
                if record.incoming is not None:
                    record_eval(record.incoming)
                status = f"{len(record.participants)}/{len(spec.silos)} silos, {record.seconds:.2f}s"
                if latest:
                    status += f", acc {latest[0].accuracy:.3f} (after round {latest[0].after_round})"
                progress.update(task, advance=1, status=status)
                server_round += 1
        final: GlobalEval = _get(federation.orchestrator.evaluate.remote())
        record_eval(final)
        summary.finish(final)
        figure = metrics_figure(
            tracker.series("global/val_accuracy"),
            tracker.series("global/val_loss"),
            {name: tracker.series(f"silo/{name}/val_accuracy") for name in summary.silos},
        )
        tracker.log_figure(figure, "metrics.png")
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
            published = _get(federation.orchestrator.publish.remote(spec.publisher, request))
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
        if federation is not None:
            federation.stop()
        if started_ray:
            ray.shutdown()


def _get_raise(err: BaseException) -> Any:
    """Re-raise a failed orchestrator call as the domain error it carries, never Ray's traceback."""
    cause = unwrap(err)
    if isinstance(cause, FederationError):
        raise cause from None
    if _orchestrator_died(err):
        raise FederationError(f"the orchestrator died: {err}") from None
    raise FederationError(failure_reason(err)) from None


def write_summary(summary: RunSummary, path: Path) -> None:
    import json

    path.write_text(json.dumps(summary.to_dict(), indent=2))

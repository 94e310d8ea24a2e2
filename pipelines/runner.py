"""Run one federation: start Ray actors, drive rounds, log everything to MLflow.

fedsilo run                       # the bundled four-hospital example
fedsilo run my_pipeline.toml --summary-json summary.json
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import ray
from rich.console import Console

from orchestrator.errors import BudgetSpent, FederationError
from orchestrator.metrics import GlobalEval
from orchestrator.records import OrchestratorState, SetupReport
from pipelines import checkpoint, early, federation
from pipelines.console import round_progress, setup_table, summary_table, undefined_notes
from pipelines.lineage import lifecycle_card, lifecycle_version_tags
from pipelines.privacy_report import chained_privacy, delta_problems, privacy_tags
from pipelines.registry import check_reachable
from pipelines.report import RunSummary, metrics_figure, model_card
from pipelines.spec import LoadedPipeline, PipelineError
from pipelines.tracking import RunTracker, resolve_tracking_uri
from pipelines.warmstart import resolve_warm_start
from silo.messages import PublishRequest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    address: str | None = None  # join an existing Ray cluster; None starts a local one
    rounds: int | None = None  # overrides the pipeline's rounds
    log_to_driver: bool = False  # stream actor logs into this terminal
    resume: str | None = None  # an MLflow run id whose checkpoint to continue from
    tags: dict[str, str] = field(default_factory=dict)  # extra MLflow run tags (e.g. fedsilo.trigger)


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
    check_reachable(tracking_uri)  # /health, with retries and backoff: seconds, not MLflow's minutes
    early_work = early.start(tracking_uri)  # while Ray starts: MLflow's store, the silos' imports
    if resumed is not None:
        _check_resumable(tracking_uri, resumed, rounds)
    warm = resolve_warm_start(loaded, tracking_uri) if resumed is None else None
    ray_start = time.perf_counter()
    started_ray = federation.start_ray(spec.name, options.address, options.log_to_driver)
    early.wait(early_work)
    ray_start_seconds = time.perf_counter() - ray_start
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
    summary.ray_start_seconds = ray_start_seconds
    actors: federation.Federation | None = None
    ok = False
    try:
        if resumed is None:
            tracker.log_pipeline(loaded)
        else:
            tracker.resumed(resumed.orchestrator.round)
        tracker.set_tags(options.tags)
        done = resumed.orchestrator.round if resumed else 0
        console.print(
            f"[bold]fedsilo[/] federation [cyan]{spec.name}[/]: {len(spec.silos)} silos, {rounds} rounds"
            + (f" (resuming after round {done})" if resumed else "")
            + f", HE {spec.privacy.he}, MLflow run {tracker.run_id} at {tracking_uri}"
        )
        setup_start = time.perf_counter()
        if warm is not None:
            tracker.set_tags({"fedsilo.warm_start": warm.describe()})
            console.print(f"warm start from {warm.describe()}")
        actors = federation.Federation(
            loaded, tracker.run_id, checkpoints, resume=resumed is not None,
            warm_start=(warm.uri, tracking_uri) if warm else None, tracking_uri=tracking_uri,
            known_key=_known_key(resumed.orchestrator) if resumed else None,
        )  # fmt: skip
        left_out = {a.site: (a.rule or a.kind, a.message) for a in actors.site_answers}
        tracker.log_left_out(left_out)
        for site, (rule, message) in left_out.items():
            console.print(f"[yellow]site {site} left out ({rule}):[/] {message}", highlight=False)
            summary.per_silo.setdefault(site, {})["left_out"] = message
        with console.status("setting up: reading silo data, exchanging keys, federated statistics"):
            setup: SetupReport = actors.setup()
            if resumed:
                federation.get(actors.orchestrator.restore.remote(resumed.orchestrator))
        summary.setup_seconds = time.perf_counter() - setup_start  # actor start-up included
        tracker.log_setup(setup, summary.setup_seconds)
        task_tags = _task_tags(loaded, setup)
        tracker.set_tags(task_tags)
        problems = delta_problems(spec, {r.silo: r.train_rows for r in setup.ready})
        if problems:
            raise PipelineError(loaded.path, problems)
        summary.model_parameters = setup.n_parameters
        for ready in setup.ready:
            summary.per_silo.setdefault(ready.silo, {}).update({"node": ready.node, "device": ready.device})
        console.print(setup_table(setup))
        if resumed and resumed.last_record is not None:
            tracker.ensure_round_logged(resumed.last_record)
        state: OrchestratorState = federation.get(actors.orchestrator.state.remote())
        latest: list[GlobalEval] = []  # the newest evaluation, for the progress line

        recoveries = 0
        with round_progress(console) as progress:
            task = progress.add_task("rounds", total=rounds, completed=done, status="")
            server_round = done + 1
            while server_round <= rounds:
                try:
                    # The round and the state after it, as one step: an orchestrator that dies
                    # between the two is replaced from the previous state and the round runs again.
                    record = ray.get(actors.orchestrator.run_round.remote(server_round))
                    next_state: OrchestratorState = ray.get(actors.orchestrator.state.remote()).fetched()
                except ray.exceptions.RayError as err:
                    if isinstance(federation.unwrap(err), BudgetSpent):
                        summary.stopped = str(federation.unwrap(err))
                        break
                    if not federation.orchestrator_died(err) or recoveries >= ORCHESTRATOR_RECOVERIES:
                        return federation.raise_domain(err)
                    recoveries += 1
                    logger.warning("the orchestrator died in round %d; starting a new one", server_round)
                    actors.start_orchestrator(_known_key(state))
                    federation.get(actors.orchestrator.restore.remote(state))
                    continue
                summary.add_round(record)
                if record.incoming is not None:
                    summary.add_eval(record.incoming)
                    latest[:] = [record.incoming]
                state = next_state
                # Checkpoint first: a crash before logging is repaired on resume (idempotent per step).
                checkpoint.save(
                    checkpoints, checkpoint.Checkpoint(tracker.run_id, state, summary.to_dict(), record)
                )
                tracker.log_round(record)
                if record.incoming is not None:
                    tracker.log_eval(record.incoming)
                status = f"{len(record.participants)}/{len(spec.silos)} silos, {record.seconds:.2f}s"
                if latest:
                    status += f", {headline(latest[0])} (after round {latest[0].after_round})"
                progress.update(task, advance=1, status=status)
                server_round += 1
        for site, (sent, received) in actors.traffic().items():  # the gateway's, framing included
            summary.per_silo.setdefault(site, {}).update(
                wire_bytes_to_site=sent, wire_bytes_from_site=received
            )
        if summary.stopped:
            console.print(f"[yellow]{summary.stopped}[/]", highlight=False)
            tracker.set_tags({"fedsilo.stopped": summary.stopped.splitlines()[0][:5000]})
            if summary.rounds_completed == 0:
                raise FederationError(summary.stopped + "\n  no round completed: nothing to publish")
        final: GlobalEval = federation.get(actors.orchestrator.evaluate.remote())
        tracker.log_eval(final)
        summary.add_eval(final)
        summary.finish(final)
        # The publishing silo decrypts and registers while the driver draws the metrics figure.
        publish_start = time.perf_counter()
        privacy = privacy_tags(spec, setup.codec, summary.privacy)
        if warm is not None and spec.privacy.dp != "off":
            privacy.update(chained_privacy(privacy, warm.uri, warm.tags))
        tracker.set_tags(privacy)
        request = PublishRequest(
            tracking_uri=tracking_uri,
            run_id=tracker.run_id,
            registered_model=spec.registered_model,
            version_tags={
                "fedsilo.run_id": tracker.run_id,
                "fedsilo.silos": ",".join(summary.silos),
                "fedsilo.he": spec.privacy.he,
                "fedsilo.dp": spec.privacy.dp,
                **privacy,
                **lifecycle_version_tags(setup, warm),
                **task_tags,
            },
        )
        publishing = actors.orchestrator.publish.remote(spec.publisher, request)
        figure = metrics_figure(
            tracker.series("global/val_accuracy"),
            tracker.series("global/val_loss"),
            {name: tracker.series(f"silo/{name}/val_accuracy") for name in summary.silos},
        )
        tracker.log_figure(figure, "metrics.png")
        with console.status(f"silo {spec.publisher} is publishing the model to the registry"):
            published = federation.get(publishing)
        summary.publish_seconds = time.perf_counter() - publish_start
        summary.registered_model = {
            "name": published.name,
            "version": published.version,
            "alias": published.alias,
        }
        summary.wall_seconds = time.perf_counter() - wall
        tracker.log_text(model_card(loaded, setup, summary) + lifecycle_card(setup, warm), "model_card.md")
        tracker.log_dict(summary.to_dict(), "summary.json")
        console.print(summary_table(summary))
        for note in undefined_notes(summary):
            console.print(note, style="yellow", highlight=False)
        console.print(
            f"registered [bold]{published.name}[/] version {published.version} as @{published.alias}; "
            f"load it with mlflow.pyfunc.load_model('models:/{published.name}@{published.alias}')"
        )
        ok = True
        return summary
    finally:
        summary.wall_seconds = time.perf_counter() - wall
        tracker.finish(ok)
        if actors is not None:
            actors.stop()
        if started_ray:
            stop = time.perf_counter()
            ray.shutdown()
            summary.ray_shutdown_seconds = time.perf_counter() - stop


def headline(result: GlobalEval) -> str:
    """The progress line's figure: accuracy where the task has one, else its first figure."""
    name = "accuracy" if "accuracy" in result.metrics else next(iter(result.metrics), "")
    value = result.metrics.get(name)
    return f"{name[:3] if name == 'accuracy' else name} {value:.3f}" if value is not None else "no figures"


def _task_tags(loaded: LoadedPipeline, setup: SetupReport) -> dict[str, str]:
    """A task run's tags (also the version's): the task file's sha256 and name."""
    task = loaded.spec.task
    if task is None:
        return {}
    sha = setup.descriptions[0].task_sha256 if setup.descriptions else ""
    return {
        "fedsilo.task.sha256": sha,
        "fedsilo.task.module": task.module,
        "fedsilo.task.kind": str(task.kind),
    }


def write_summary(summary: RunSummary, path: Path) -> None:
    import json

    path.write_text(json.dumps(summary.to_dict(), indent=2))

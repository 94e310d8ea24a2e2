"""MLflow conventions of DESIGN.md: one run per federation, metrics per round (step = round).

The driver logs params, tags, per-round metrics and artifacts; the publishing silo
logs the model itself into the same run.
"""

from __future__ import annotations

import logging
import math
import subprocess
import time
from concurrent.futures import Future, ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

from orchestrator.metrics import GlobalEval, undefined_figures
from orchestrator.records import RoundRecord, SetupReport
from pipelines.spec import LoadedPipeline, flatten

logger = logging.getLogger(__name__)


def resolve_tracking_uri(uri: str, cwd: Path | None = None) -> str:
    """Make a relative ``sqlite:///file.db`` absolute, so silo processes write the same store."""
    cwd = cwd or Path.cwd()
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str((cwd / uri[len(prefix) :]).resolve())
    if "://" not in uri:
        return str((cwd / uri).resolve())
    return uri


def code_version() -> str:
    try:
        version = metadata.version("fedsilo")
    except metadata.PackageNotFoundError:
        version = "unknown"
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        return f"{version}+g{sha}"
    except (OSError, subprocess.SubprocessError):
        return version


def eval_metrics(result: GlobalEval) -> dict[str, float]:
    """The evaluation's MLflow metrics: every figure as ``global/<name>`` and ``silo/<silo>/<name>``
    (the task contract) and as ``global/val_<name>``, ``silo/<silo>/val_<name>`` (the names runs have
    always had). An undefined (NaN) figure is left out, never logged as a number (`undefined_tags`
    says why it is missing)."""
    metrics: dict[str, float] = {"eval/silos": float(len(result.per_silo))}
    for name, value in result.metrics.items():
        metrics[f"global/{name}"] = metrics[f"global/val_{name}"] = value
    mean = result.mean_of_silos("accuracy")
    if mean is not None:
        metrics["global/val_accuracy_mean_of_silos"] = mean
    for silo, score in result.per_silo.items():
        for name, value in score.metrics.items():
            metrics[f"silo/{silo}/{name}"] = metrics[f"silo/{silo}/val_{name}"] = value
    return {key: value for key, value in metrics.items() if math.isfinite(value)}


def undefined_tags(result: GlobalEval) -> dict[str, str]:
    """``fedsilo.undefined.silo/<silo>/val_<figure>``: why that silo's figure has no values."""
    return {
        f"fedsilo.undefined.silo/{name}/val_{metric}": why
        for name, figures in undefined_figures(result.per_silo).items()
        for metric, why in figures.items()
    }


def round_metrics(record: RoundRecord) -> dict[str, float]:
    metrics = {
        "round/seconds": record.seconds,
        "round/bytes_up": float(record.bytes_up),
        "round/bytes_down": float(record.bytes_down),
        "round/participants": float(len(record.participants)),
        "round/failures": float(len(record.failures)),
        "round/late": float(len(record.late)),
        "round/rejoined": float(len(record.rejoined)),
        "round/attempts": float(record.attempts),
        "round/aggregate_seconds": record.aggregate_seconds,
        "round/rejected": float(len(getattr(record, "rejected", ()))),
        "round/idle": float(len(getattr(record, "idle", ()))),  # not drawn this round (fraction < 1)
    }
    for name, loss in record.train_loss.items():
        metrics[f"silo/{name}/train_loss"] = loss
    for name, epsilon in record.epsilon.items():
        metrics[f"privacy/epsilon/{name}"] = epsilon
    if record.epsilon:
        metrics["privacy/epsilon"] = max(record.epsilon.values())
    return metrics


class RunTracker:
    """The federation's MLflow run, driven from the driver process."""

    def __init__(self, tracking_uri: str, experiment: str, run_name: str, run_id: str | None = None) -> None:
        """``run_id``: continue that run (``--resume``) instead of starting one."""
        import mlflow

        self._mlflow = mlflow
        self.tracking_uri = tracking_uri
        mlflow.set_tracking_uri(tracking_uri)
        self.experiment = experiment
        if run_id is None:
            mlflow.set_experiment(experiment)
            self._run = mlflow.start_run(run_name=run_name)
        else:
            self._run = mlflow.start_run(run_id=run_id)
        self.run_id: str = self._run.info.run_id
        self.events: list[dict[str, Any]] = []
        # Steps already in the store (a resumed run): logging stays idempotent per step.
        self._logged_rounds: set[int] = set()
        self._logged_evals: set[int] = set()
        self._undefined: set[str] = set()  # fedsilo.undefined.* tags set so far
        # What this process logged, {metric: {step: value}}: `series` reads it back without a
        # query (a resumed run's earlier rounds are only in the store: there it asks the store).
        self._logged: dict[str, dict[int, float]] = {}
        self._resumed = run_id is not None
        # Per-round metrics go to the store on one thread of ours, so rounds never wait for it.
        # (Not MLflow's own asynchronous logging: its flush and end_run each join a thread that
        # polls its queue once a second, about 2 s at the end of every run.)
        self._client = mlflow.MlflowClient()  # the store at tracking_uri, for every call by run id
        self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedsilo-mlflow")
        self._pending: list[Future[Any]] = []
        if run_id is not None:
            client = self._client
            self._logged_rounds = {m.step for m in client.get_metric_history(run_id, "round/participants")}
            evaluated = client.get_metric_history(run_id, "eval/silos") or client.get_metric_history(
                run_id,
                "global/val_accuracy",  # runs logged before eval/silos
            )
            self._logged_evals = {m.step for m in evaluated}
            events = self._mlflow.artifacts.load_dict if self._has_artifact("events.json") else None
            if events is not None:
                self.events = list(events(f"runs:/{run_id}/events.json").get("events", []))

    def _has_artifact(self, name: str) -> bool:
        return any(a.path == name for a in self._client.list_artifacts(self.run_id))

    def series(self, name: str) -> list[tuple[int, float]]:
        """A metric's (step, value) pairs, one per step: as logged (a resumed run: from the store)."""
        if not self._resumed:
            return sorted(self._logged.get(name, {}).items())
        self.flush()
        history = self._client.get_metric_history(self.run_id, name)
        return sorted({m.step: m.value for m in history}.items())

    def _log_metrics(self, metrics: dict[str, float], step: int, synchronous: bool = True) -> None:
        for name, value in metrics.items():
            self._logged.setdefault(name, {})[step] = value
        if synchronous:
            self._mlflow.log_metrics(metrics, step=step)
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(name, value, now, step) for name, value in metrics.items()]
        self._pending.append(self._background.submit(self._client.log_batch, self.run_id, metrics=batch))

    def resumed(self, after_round: int) -> None:
        self._mlflow.set_tag("fedsilo.resumed_after_round", str(after_round))
        self.events.append({"round": after_round, "silo": "", "event": "run resumed from checkpoint"})

    def ensure_round_logged(self, record: RoundRecord) -> None:
        """A round checkpointed just before a crash may have missed MLflow: log it (once)."""
        self.log_round(record)
        if record.incoming is not None:
            self.log_eval(record.incoming)

    def log_pipeline(self, loaded: LoadedPipeline) -> None:
        spec = loaded.spec
        self._mlflow.log_params(flatten(spec))
        self._mlflow.log_text(loaded.text, "pipeline.toml")
        if spec.task is not None and spec.task.module.endswith(".py"):  # the task file, beside the pipeline
            self._mlflow.log_artifact(loaded.resolve(spec.task.module), "task")
        self._mlflow.set_tags(
            {
                "fedsilo.silos": ",".join(s.name for s in spec.silos),
                "fedsilo.strategy": spec.training.strategy,
                "fedsilo.dp": spec.privacy.dp,
                "fedsilo.code_version": code_version(),
                "fedsilo.he.scheme": spec.privacy.he,
            }
        )

    def set_tags(self, tags: dict[str, str]) -> None:
        if tags:
            self._mlflow.set_tags(tags)

    def log_setup(self, report: SetupReport, seconds: float) -> None:
        """``seconds``: what the driver waited, actor start-up included."""
        tags = {f"fedsilo.he.{key}": value for key, value in report.codec.items()}
        tags["fedsilo.model_parameters"] = str(report.n_parameters)
        tags["fedsilo.devices"] = ",".join(f"{r.silo}={r.device}" for r in report.ready)
        tags["fedsilo.nodes"] = ",".join(f"{r.silo}={r.node}" for r in report.ready)
        for r in report.ready:  # data versions: what each silo trained on (hash and count, never rows)
            tags[f"data/{r.silo}/sha256"] = r.data_sha256
            tags[f"data/{r.silo}/rows"] = str(r.data_rows)
        for d in report.descriptions:  # e.g. a single class: trained, but said
            if d.warnings:
                tags[f"data/{d.name}/warning"] = "; ".join(d.warnings)[:5000]
        self._mlflow.set_tags(tags)
        metrics = {
            "setup/seconds": seconds,
            "setup/bytes_up": float(report.bytes_up),
            "setup/bytes_down": float(report.bytes_down),
        }
        for ready in report.ready:
            metrics[f"silo/{ready.silo}/train_rows"] = float(ready.train_rows)
            metrics[f"silo/{ready.silo}/val_rows"] = float(ready.val_rows)
        self._log_metrics(metrics, step=0)

    def log_left_out(self, left_out: dict[str, tuple[str, str]]) -> None:
        """Remote sites that did not join the run: {site: (rule or "unavailable", message)}."""
        if not left_out:
            return
        for site, (rule, message) in left_out.items():
            self.events.append({"round": 0, "silo": site, "event": f"left out ({rule}): {message}"})
        rules = ", ".join(f"{site}={rule}" for site, (rule, _) in left_out.items())
        self._mlflow.set_tags({"fedsilo.sites.left_out": rules})
        self._mlflow.log_dict({"events": self.events}, "events.json")

    def log_round(self, record: RoundRecord) -> None:
        if record.round in self._logged_rounds:
            return
        self._logged_rounds.add(record.round)
        # Asynchronous: rounds never wait for the tracking store; finish() flushes.
        self._log_metrics(round_metrics(record), step=record.round, synchronous=False)
        for failure in record.failures:
            self.events.append({"round": record.round, "silo": failure.silo, "event": failure.reason})
        for name in record.rejoined:
            self.events.append({"round": record.round, "silo": name, "event": "restarted and rejoined"})
        if record.failures or record.rejoined:
            self._mlflow.log_dict({"events": self.events}, "events.json")  # as they happen, not at the end

    def log_eval(self, result: GlobalEval) -> None:
        if result.after_round in self._logged_evals:
            return
        self._logged_evals.add(result.after_round)
        self._log_metrics(eval_metrics(result), step=result.after_round, synchronous=False)
        undefined = {k: v for k, v in undefined_tags(result).items() if k not in self._undefined}
        if undefined:  # once per figure: a silo's rows, not the round, make it undefined
            self._undefined.update(undefined)
            self._mlflow.set_tags(undefined)

    def log_figure(self, figure: Any, name: str) -> None:
        self._mlflow.log_figure(figure, name)

    def log_text(self, text: str, name: str) -> None:
        self._mlflow.log_text(text, name)

    def log_dict(self, value: dict[str, Any] | list[Any], name: str) -> None:
        self._mlflow.log_dict(value, name)  # type: ignore[arg-type]

    def flush(self) -> None:
        """Wait for the metrics logged in the background; the first error is raised here."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def finish(self, ok: bool) -> None:
        try:
            self.flush()
        except Exception as err:  # the run's status and events still go in
            logger.warning("some per-round metrics did not reach MLflow: %s", err)
        if self.events:
            self._mlflow.log_dict({"events": self.events}, "events.json")
        self._background.shutdown(wait=True)
        self._mlflow.end_run(status="FINISHED" if ok else "FAILED")

"""The run summary (``--summary-json``), the model card and the metrics plot."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from orchestrator.metrics import GlobalEval
from orchestrator.records import RoundRecord, SetupReport
from pipelines.privacy_report import privacy_card
from pipelines.spec import LoadedPipeline


@dataclass
class RunSummary:
    run_id: str
    tracking_uri: str
    experiment: str
    rounds: int
    silos: list[str]
    he: str
    model_parameters: int = 0
    rounds_completed: int = 0
    per_round: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)
    registered_model: dict[str, Any] | None = None
    setup_seconds: float = 0.0  # actor start-up, data checks, keys, federated statistics
    publish_seconds: float = 0.0  # decrypt, export, log and register the model
    wall_seconds: float = 0.0
    ray_start_seconds: float = 0.0  # ray.init (or joining the cluster), the MLflow store opened beside it
    ray_shutdown_seconds: float = 0.0  # the local Ray this run started, stopped
    per_silo: dict[str, dict[str, Any]] = field(default_factory=dict)
    # epsilon and noise multiplier per silo (latest), contributors (silos in at least one round)
    privacy: dict[str, Any] = field(default_factory=dict)
    stopped: str | None = None  # why the run ended before its last round (privacy budget spent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSummary:
        return cls(**data)

    def add_round(self, record: RoundRecord) -> None:
        self.rounds_completed = record.round
        self.per_round.append(
            {
                "round": record.round,
                "participants": len(record.participants),
                "idle": list(getattr(record, "idle", ())),  # not drawn this round (fraction < 1)
                "seconds": record.seconds,
                "bytes_up": record.bytes_up,
                "bytes_down": record.bytes_down,
                "global_val_accuracy": None,
                "failures": [str(f) for f in record.failures],
                "rejoined": list(record.rejoined),
                "attempts": record.attempts,
            }
        )
        privacy = self.privacy
        privacy.setdefault("epsilon", {}).update(record.epsilon)
        privacy.setdefault("noise_multiplier", {}).update(record.noise_multiplier)
        contributors = set(privacy.get("contributors", [])) | set(record.participants)
        privacy["contributors"] = [s for s in self.silos if s in contributors]

    def add_eval(self, result: GlobalEval) -> None:
        for row in self.per_round:
            if row["round"] == result.after_round:
                row["global_val_accuracy"] = result.accuracy
                row["global_val_loss"] = result.loss
                row["metrics"] = result.metrics  # every figure over all silos' rows, NaN where undefined

    def finish(self, result: GlobalEval) -> None:
        """Final figures: NaN where a silo's rows leave one undefined (the reason under
        ``per_silo[silo]["undefined"]``); the global ones come from the summed sums."""
        self.final = {
            "global_val_accuracy": result.accuracy,
            "global_val_loss": result.loss,
            "global_val_auc": result.auc,
            "mean_of_silos_val_accuracy": result.mean_of_silos("accuracy"),
            "metrics": result.metrics,
            "silos": {name: score.metrics for name, score in result.per_silo.items()},
        }
        for name, score in result.per_silo.items():
            row = self.per_silo.setdefault(name, {})
            row.update({f"val_{metric}": value for metric, value in score.metrics.items()})
            row.update({"val_rows": score.examples, "undefined": dict(score.undefined)})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_card(loaded: LoadedPipeline, setup: SetupReport, summary: RunSummary) -> str:
    spec = loaded.spec
    he = setup.codec
    he_line = (
        "off (plaintext aggregation: the orchestrator saw every update)"
        if he.get("scheme") == "off"
        else f"{he['scheme']}: " + ", ".join(f"{k} = {v}" for k, v in he.items() if k != "scheme")
    )
    rows = "\n".join(
        f"| {r.silo} | {r.train_rows} | {r.val_rows} | {r.dropped_rows} | {r.device} |" for r in setup.ready
    )
    final = summary.final
    how = "in the clear" if he.get("scheme") == "off" else "under homomorphic encryption"
    quality = ", ".join(f"{name} {value:.4f}" for name, value in final.get("metrics", {}).items())
    example = (
        "synthetic (federated means and modes), not a real record"
        if spec.data
        else "none (any would be a record)"
    )
    return f"""# Model card: {spec.registered_model}

Trained by fedsilo federation **{spec.name}** on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC
(MLflow run `{summary.run_id}`), {summary.rounds_completed} rounds of {spec.training.strategy}.
No row of data left any silo; the orchestrator added the silos' updates {how}.

## Model
{_model_lines(loaded, setup)}

## Data (row counts only; the data stayed at each silo)
| silo | train rows | validation rows | rows dropped | device |
|---|---|---|---|---|
{rows}

## Privacy
- homomorphic encryption: {he_line}
{privacy_card(spec, summary.privacy, summary.stopped)}
- input example: {example}

## Quality (global model, validation rows of every silo)
- {quality}
- mean of per-silo accuracies: {_mean_text(final.get("mean_of_silos_val_accuracy"))}
{_undefined_card(summary.per_silo)}"""


def _model_lines(loaded: LoadedPipeline, setup: SetupReport) -> str:
    spec, schema = loaded.spec, setup.schema
    if spec.task is not None or schema is None:
        task = spec.task
        assert task is not None
        sha = setup.descriptions[0].task_sha256 if setup.descriptions else ""
        return (
            f"- task: `{task.module}` (sha256 {sha}), kind {task.kind or 'its own loss and metrics'}; "
            f"{setup.n_parameters} values exchanged per round (trainable parameters"
            f"{', float buffers' if task.buffers == 'federated' else ''}); the task file ships with the model"
        )
    table, inputs = spec.table, ", ".join(schema.features)
    return f"""- kind: {spec.model.kind}; {setup.n_parameters} parameters; inputs: {inputs}
- target: `{table.target}`; classes: {", ".join(schema.classes)}
- preprocessing (inside the model): federated means/standard deviations, one-hot of
  {", ".join(schema.categorical) or "no columns"}, missing values: {table.missing}"""


def _mean_text(mean: float | None) -> str:
    return "undefined" if mean is None else f"{mean:.4f}"


def _undefined_card(per_silo: dict[str, dict[str, Any]]) -> str:
    lines = [
        f"- silo {name}: {metric} undefined ({why})"
        for name, row in per_silo.items()
        for metric, why in row.get("undefined", {}).items()
    ]
    return "\n".join(lines) + "\n" if lines else ""


def metrics_figure(
    accuracy: list[tuple[int, float]],
    loss: list[tuple[int, float]],
    per_silo: dict[str, list[tuple[int, float]]],
) -> Any:
    """Global and per-silo validation accuracy, and global loss, by round ((step, value) pairs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for axis in (left, right):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.plot([s for s, _ in accuracy], [v for _, v in accuracy], label="global", linewidth=2)
    for name in sorted(per_silo):
        points = per_silo[name]
        left.plot([s for s, _ in points], [v for _, v in points], label=name, alpha=0.6)
    left.set(xlabel="round", ylabel="validation accuracy", title="Accuracy")
    left.legend(fontsize=8)
    right.plot([s for s, _ in loss], [v for _, v in loss], label="global", linewidth=2)
    right.set(xlabel="round", ylabel="validation loss", title="Loss")
    fig.tight_layout()
    return fig

"""Validated settings a silo is constructed with (built from the pipeline file by `pipelines`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from privacy.dp import DPConfig
from privacy.params import HEConfig
from silo.task import TaskSpec

MissingPolicy = Literal["drop", "impute"]


@dataclass(frozen=True)
class DataSpec:
    target: str
    # None: every column except the target and `ignore` (each silo must then agree).
    features: tuple[str, ...] | None = None
    # One-hot encoded with the union of the levels every silo reports.
    categorical: tuple[str, ...] = ()
    # "impute": numeric gaps take the federated mean, categorical the federated mode.
    missing: MissingPolicy = "impute"
    na_values: tuple[str, ...] = ("?", "", "NA", "NaN", "nan")
    # Column names for files without a header row (the raw UCI files are such).
    columns: tuple[str, ...] | None = None
    # Target values that make the positive class; turns any target into a binary one.
    positive: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()
    validation_fraction: float = 0.2
    seed: int = 0


@dataclass(frozen=True)
class ModelSpec:
    kind: str = "logistic"  # logistic | mlp | "package.module:factory"
    hidden: tuple[int, ...] = (32,)  # mlp only


@dataclass(frozen=True)
class SiloSpec:
    name: str
    path: str  # absolute, or relative to the silo process's working directory
    data: DataSpec | None  # the built-in tables; None for a task
    model: ModelSpec
    he: HEConfig = field(default_factory=HEConfig)
    # Out-of-band keys (`fedsilo keys init`): the secret key file on this silo's node.
    # None: a fresh key set is made for the run and shared between silos sealed.
    he_secret_path: str | None = None
    # Checkpointed runs: where this silo keeps a copy of the run's HE secret key (on its own
    # node), so that `fedsilo run --resume` can decrypt the checkpointed model.
    he_key_backup_path: str | None = None
    seed: int = 0
    dp: DPConfig = field(default_factory=DPConfig)
    # Where this silo keeps its privacy accountant (on its own node), so that a restarted silo
    # or a resumed run goes on from the epsilon already spent. None: kept in memory only.
    dp_state_path: str | None = None
    # Warm start: a resolved ``models:/NAME/VERSION`` whose weights are the initial model,
    # read from ``tracking_uri`` on the silo's node. None: the seeded initial model.
    initial_model: str | None = None
    # The run's MLflow store: the warm start's, and the one the publishing silo opens early.
    tracking_uri: str | None = None
    # The user's own PyTorch workload ([task]); None: the built-in tables ([data]).
    task: TaskSpec | None = None
    # The silo that publishes the final model imports MLflow and torch.export and opens the
    # store (``tracking_uri``) on a thread once set up, so that publishing does not start with
    # seconds of imports after the last round.
    publishes: bool = False
    # Processes that encrypt and decrypt (packed HE): the whole CPUs the silo was given
    # (`cpus_per_silo`), since SEAL's bindings hold the GIL and threads would not help.
    workers: int = 1

    @property
    def table(self) -> DataSpec:
        """[data], for the steps only the built-in tables have."""
        if self.data is None:
            raise ValueError(f"silo {self.name!r} runs a task, not the built-in tables")
        return self.data

"""The pipeline file: TOML, validated with pydantic, errors that name the field and line.

fedsilo validate pipelines/examples/heart_disease/pipeline.toml
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from orchestrator.strategies import ROBUST
from sites.config import normal_fingerprint
from sites.tomlfile import FileProblems, validate

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSection(_Section):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    kind: str = "logistic"  # logistic | mlp | "package.module:factory"
    hidden: list[int] = Field(default_factory=lambda: [32], min_length=1)
    # Warm start: round 1 starts from this registered model ("models:/NAME@ALIAS" or
    # "models:/NAME/VERSION"), resolved to a version when the run starts (pipelines/warmstart.py).
    from_: str | None = Field(None, alias="from")

    @field_validator("from_")
    @classmethod
    def _from(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^models:/[^/@]+(@[A-Za-z0-9_-]+|/\d+)$", value):
            raise ValueError("use 'models:/NAME@ALIAS' (e.g. @champion) or 'models:/NAME/VERSION'")
        return value

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if value not in ("logistic", "mlp") and not re.match(r"^[\w.]+:\w+$", value):
            raise ValueError("use 'logistic', 'mlp' or 'package.module:factory'")
        return value

    @field_validator("hidden")
    @classmethod
    def _hidden(cls, value: list[int]) -> list[int]:
        if any(h < 1 for h in value):
            raise ValueError("hidden layer widths must be positive")
        return value


class DataSection(_Section):
    target: str
    features: list[str] | None = None
    categorical: list[str] = Field(default_factory=list)
    missing: Literal["drop", "impute"] = "impute"
    na_values: list[str] = Field(default_factory=lambda: ["?", "", "NA", "NaN", "nan"])
    columns: list[str] | None = None
    positive: list[str | int | float] | None = None
    ignore: list[str] = Field(default_factory=list)
    validation_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 0

    @model_validator(mode="after")
    def _consistent(self) -> DataSection:
        if self.features is not None:
            if self.target in self.features:
                raise ValueError(f"target {self.target!r} is also listed in features")
            unknown = [c for c in self.categorical if c not in self.features]
            if unknown:
                raise ValueError(f"categorical column(s) {unknown} are not in features")
        if self.columns is not None and self.target not in self.columns:
            raise ValueError(f"target {self.target!r} is not in columns")
        return self


class TaskSection(_Section):
    """The user's own PyTorch workload (DESIGN.md "Tasks"; the contract is silo/task.py)."""

    module: str  # a .py file next to this pipeline, or an importable "pkg.module"
    kind: Literal["binary", "multiclass", "regression"] | None = None  # default loss/metrics/finalize
    # Float buffers (BatchNorm statistics) are federated with the weights, or stay on each silo.
    buffers: Literal["federated", "local"] = "federated"
    config: dict[str, Any] = Field(default_factory=dict)  # [task.config]: handed to the task's functions
    validation_fraction: float = Field(0.2, gt=0, lt=1)  # handed to dataset() as ctx.config too

    @field_validator("module")
    @classmethod
    def _module(cls, value: str) -> str:
        if not (value.endswith(".py") or re.match(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$", value)):
            raise ValueError("use a .py file next to the pipeline (e.g. 'my_task.py') or 'package.module'")
        return value


class SiloSection(_Section):
    name: str = Field(pattern=NAME)
    path: str = ""  # the data, on the silo's node; a remote silo's site names its own
    # Served by its organization's own cluster (`fedsilo site serve`) through the gateway;
    # unset: remote when the pipeline has a [federation] section.
    remote: bool | None = None
    # A remote silo's client certificate, pinned (sha256 of its DER): only that certificate may
    # serve it, whichever CA in [federation] ca signed it. Unset: any certificate from those CAs
    # whose common name is the silo's name.
    certificate_sha256: Annotated[str, AfterValidator(normal_fingerprint)] | None = None


class FederationSection(_Section):
    """Federated clusters: the coordinator's gateway, which the sites connect out to (mutual TLS)."""

    listen: str = Field("127.0.0.1:7443", pattern=r"^[^:\s]*:\d+$")  # host:port (port 0: any, tests)
    certificate: str  # the coordinator's certificate (sites pin it) and its key
    key: str
    ca: str  # the CA certificate(s) that sign the sites' client certificates
    connect_timeout_s: float = Field(60.0, gt=0)  # how long a run waits for its sites to connect
    max_message_mb: int = Field(512, ge=1)  # a larger message is refused, the peer named


Strategy = Literal[
    "fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad", "scaffold", "median", "trimmed_mean", "krum",
    "multi_krum", "geometric_median",
]  # fmt: skip
# ROBUST (orchestrator.strategies) owns the list of robust rules; a test checks Strategy names them all.


class TrainingSection(_Section):
    strategy: Strategy = "fedavg"
    local_epochs: int = Field(1, ge=1)
    # A number of batches per round instead of local_epochs passes (FLamby's count of local work)
    local_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(0.05, gt=0)
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = Field(0.0, ge=0, lt=1)
    mu: float = Field(0.01, ge=0)  # FedProx proximal strength
    seed: int = 0
    # Server optimizers (fedadam | fedyogi | fedadagrad); unset: Flower's defaults per optimizer.
    server_lr: float | None = Field(None, gt=0)
    beta1: float | None = Field(None, ge=0, lt=1)
    beta2: float | None = Field(None, ge=0, lt=1)
    tau: float | None = Field(None, gt=0)
    # Robust rules (he = "off" only) and update norm bounding.
    trim_fraction: float = Field(0.25, ge=0, lt=0.5)  # trimmed_mean: cut this share at each end
    byzantine: int = Field(0, ge=0)  # krum / multi_krum: f, the Byzantine silos tolerated
    multi_krum_m: int | None = Field(None, ge=1)  # multi_krum: average this many (default n - f)
    # median / trimmed_mean / geometric_median: weight each silo by its rows n_k like FedAvg, or equally.
    robust_weighting: Literal["examples", "uniform"] = "examples"
    clip_norm: float | None = Field(None, gt=0)  # bound on ||w_k - w_global||_2


def check_strategy(
    training: TrainingSection, he: str, n_silos: int, min_silos: int, secagg: bool = False
) -> None:
    """Strategy settings that only make sense together; raises ValueError saying what to choose.
    A round goes ahead with min_silos answers, so what a rule needs is checked against those."""
    strategy = training.strategy
    if strategy in ROBUST and he != "off":
        raise ValueError(
            f"training.strategy = {strategy!r} must see single updates, which privacy.he = {he!r} hides; "
            "use privacy.he = 'off' or strategy = 'fedavg' with training.clip_norm"
        )
    if strategy in ROBUST and secagg:
        raise ValueError(
            f"training.strategy = {strategy!r} must see single updates, which secure aggregation hides; "
            "set privacy.secagg = 'off' (the orchestrator then sees each update) or use 'fedavg' with "
            "training.clip_norm"
        )
    if strategy in ROBUST and min_silos < 3:
        raise ValueError(
            f"training.strategy = {strategy!r} with min_silos = {min_silos}: a round of two "
            "updates gets their mean (Krum: whichever is scored first), no protection; set min_silos >= 3"
        )
    if strategy in ("krum", "multi_krum") and min_silos <= 2 * training.byzantine + 2:
        raise ValueError(
            f"training.strategy = {strategy!r} with byzantine = {training.byzantine} needs more than "
            f"{2 * training.byzantine + 2} silos in every round (n > 2f + 2), min_silos is "
            f"{min_silos}; lower byzantine or raise min_silos"
        )
    if training.multi_krum_m is not None and training.multi_krum_m > n_silos:
        raise ValueError(
            f"training.multi_krum_m = {training.multi_krum_m} but only {n_silos} silos are listed"
        )
    if strategy == "scaffold" and training.optimizer != "sgd":
        raise ValueError("training.strategy = 'scaffold' corrects SGD steps; use optimizer = 'sgd'")


def check_secagg(privacy: PrivacySection, n_silos: int) -> None:
    """Secure aggregation with what it needs; raises ValueError saying what to choose."""
    if privacy.secagg == "pairwise" and privacy.he == "ckks":
        raise ValueError(
            "privacy.secagg = 'pairwise' masks quantized integers, which privacy.he = 'ckks' does not "
            "have (CKKS encodes approximate floats); use privacy.he = 'packed' (or 'off' for a secure "
            "sum without HE) or secagg = 'off'"
        )
    if privacy.secagg == "pairwise" and n_silos < 2:
        raise ValueError("privacy.secagg = 'pairwise' needs at least 2 silos")
    if privacy.threshold is not None:
        if privacy.secagg == "off" or (privacy.secagg is None and (privacy.he != "packed" or n_silos < 3)):
            raise ValueError("privacy.threshold is set but secure aggregation is off")
        if privacy.threshold > n_silos:
            raise ValueError(f"privacy.threshold = {privacy.threshold} but only {n_silos} silos are listed")


def check_dp(dp: str, training: TrainingSection, he: str, min_silos: int, secagg: bool = False) -> None:
    """Differential privacy with what it cannot protect; raises ValueError saying what to choose."""
    strategy = training.strategy
    if dp == "record" and strategy == "scaffold":
        raise ValueError(
            "privacy.dp = 'record' trains with DP-SGD, which does not apply SCAFFOLD's gradient "
            "correction; use training.strategy = 'fedavg', 'fedadam' or 'fedyogi'"
        )
    if dp == "record" and strategy == "fedprox":
        raise ValueError(
            "privacy.dp = 'record' trains with DP-SGD, which does not clip FedProx's proximal term; "
            "use training.strategy = 'fedavg'"
        )
    if dp != "silo":
        return
    if strategy in ROBUST:
        raise ValueError(
            f"privacy.dp = 'silo' sizes each silo's noise share so that a sum of min_silos updates carries "
            f"the full noise; training.strategy = {strategy!r} picks or sorts single updates instead of "
            "summing them, so it would release updates with a share of the noise; use 'fedavg', "
            "'fedadam', 'fedyogi' or 'fedadagrad'"
        )
    if strategy == "scaffold":
        raise ValueError(
            "privacy.dp = 'silo' trains without SCAFFOLD's drift correction; use training.strategy = "
            "'fedavg', 'fedadam' or 'fedyogi'"
        )
    if he == "off" and min_silos > 1 and not secagg:
        raise ValueError(
            f"privacy.dp = 'silo' with privacy.he = 'off': the orchestrator would see each update with "
            f"1/{min_silos} of the noise variance; use privacy.he = 'packed' (or 'ckks') so only the sum "
            "is decrypted, privacy.secagg = 'pairwise' so only the sum is seen, or min_silos = 1 so each "
            "silo adds the full noise"
        )
    if training.clip_norm is not None:
        raise ValueError(
            "privacy.dp = 'silo' bounds each update by privacy.max_grad_norm before adding noise; "
            "training.clip_norm would clip after the noise, which the accounting does not cover; remove it"
        )


# SEAL's 128-bit-security bound on the total coefficient modulus, per ring degree.
MAX_MODULUS_BITS = {4096: 109, 8192: 218, 16384: 438, 32768: 881}


class CKKSSection(_Section):
    poly_modulus_degree: Literal[4096, 8192, 16384, 32768] = 8192
    # [base, one rescale level for the orchestrator's x 1/sum(n), special prime]
    coeff_mod_bit_sizes: list[int] = Field(default_factory=lambda: [60, 40, 60], min_length=3)
    scale_bits: int = Field(40, ge=20, le=60)

    @model_validator(mode="after")
    def _secure_and_usable(self) -> CKKSSection:
        total, limit = sum(self.coeff_mod_bit_sizes), MAX_MODULUS_BITS[self.poly_modulus_degree]
        if total > limit:
            raise ValueError(
                f"coeff_mod_bit_sizes add up to {total} bits; poly_modulus_degree = "
                f"{self.poly_modulus_degree} allows at most {limit} for 128-bit security"
            )
        if any(not 20 <= b <= 60 for b in self.coeff_mod_bit_sizes):
            raise ValueError("every coefficient modulus must have 20 to 60 bits")
        if self.coeff_mod_bit_sizes[0] <= self.scale_bits:
            raise ValueError("the first coefficient modulus must have more bits than scale_bits")
        return self


class PackedSection(_Section):
    # The default codec: BFV, quantized values packed several to a slot (see privacy/packed.py).
    value_bits: int = Field(16, ge=4, le=32)
    max_silos: int | None = Field(None, ge=1)  # headroom for this many addends; default: the silos listed
    poly_modulus_degree: Literal[4096, 8192] = 4096
    plain_modulus_bits: int = Field(60, ge=30, le=60)


class PrivacySection(_Section):
    he: Literal["packed", "ckks", "off"] = "packed"
    ckks: CKKSSection = Field(default_factory=CKKSSection)
    packed: PackedSection = Field(default_factory=PackedSection)
    # Out-of-band keys: the folder `fedsilo keys init` wrote (relative to this file; each
    # silo reads its he-secret.key there on its own node). Unset: a fresh key set per run.
    keys: str | None = None
    # Differential privacy (privacy/dp.py): "record" = DP-SGD in each silo (Opacus), "silo" =
    # clipped updates plus distributed Gaussian noise. Give target_epsilon (the noise multiplier
    # is calibrated over every planned round) or noise_multiplier (epsilon is only tracked).
    dp: Literal["off", "record", "silo"] = "off"
    target_epsilon: float | None = Field(None, gt=0)
    delta: float = Field(1e-5, gt=0, lt=1)
    noise_multiplier: float | None = Field(None, gt=0)
    max_grad_norm: float = Field(1.0, gt=0)  # record: per-sample gradient bound; silo: update norm bound
    accountant: Literal["rdp", "prv", "gdp"] = "rdp"
    # Secure aggregation (privacy/secagg.py): "pairwise" masks every update inside the encrypted
    # sum so that no coalition of the orchestrator with fewer than `threshold` silos reads one,
    # even though silos share the HE key. Unset: on for he = "packed" with 3 or more silos.
    secagg: Literal["pairwise", "off"] | None = None
    threshold: int | None = Field(None, ge=2)  # silos that must survive a sum; default floor(n/2)+1

    @model_validator(mode="after")
    def _dp_settings(self) -> PrivacySection:
        if self.dp != "off" and (self.target_epsilon is None) == (self.noise_multiplier is None):
            raise ValueError(
                f"privacy.dp = {self.dp!r} needs exactly one of target_epsilon (a budget, e.g. 8) "
                "and noise_multiplier (e.g. 1.0)"
            )
        return self


class TrackingSection(_Section):
    mlflow_uri: str = "sqlite:///mlruns.db"
    experiment: str | None = None  # default: the pipeline name
    registered_model: str | None = None  # default: "<name>-model"
    publisher: str | None = None  # the silo that decrypts and registers; default: the first
    # Checkpoints for --resume, relative to the current folder (like the MLflow store).
    checkpoints: str = "fedsilo-checkpoints"


class ResourcesSection(_Section):
    # Fractions of a CPU so four silos and the orchestrator fit a 2-core laptop;
    # raise them on real silo nodes.
    cpus_per_silo: float = Field(0.25, gt=0)
    # "auto": 1 when the cluster has a GPU per silo, a fair share (1/2, 1/4, ...) when silos
    # must share, 0 without GPUs.
    gpus_per_silo: float | Literal["auto"] = "auto"
    # Pin each silo to the node started with the custom resource "silo:<name>"
    # (`ray start --address HEAD --resources '{"silo:cleveland": 1}'`): "auto" pins the silos
    # whose resource the cluster offers, "pinned" requires it for every silo, "anywhere" never pins.
    placement: Literal["auto", "pinned", "anywhere"] = "auto"
    # How long a silo may wait to be placed on a node before the run stops.
    placement_timeout_s: float = Field(120.0, gt=0)

    @field_validator("gpus_per_silo")
    @classmethod
    def _gpus(cls, value: float | str) -> float | str:
        if not isinstance(value, str) and value < 0:
            raise ValueError("must be 'auto' or at least 0")
        return value

    orchestrator_cpus: float = Field(0.1, gt=0)
    # Ray restarts a silo whose process dies this many times; it rejoins the next round.
    silo_restarts: int = Field(3, ge=0)


class ScheduleSection(_Section):
    """``fedsilo schedule PIPELINE`` runs it on this cron (see pipelines/schedule.py)."""

    cron: str  # 5 fields (minute hour day month weekday), or 6 with seconds last (croniter)
    timezone: str = "UTC"  # IANA name the cron is read in, e.g. "Europe/Zurich"
    catch_up: bool = True  # after downtime, run once for the fires that were missed
    # Lock, last fire time and run logs per pipeline, relative to the current folder.
    state: str = "fedsilo-schedule"

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        from croniter import croniter

        try:
            croniter(value)
        except (ValueError, KeyError) as err:
            raise ValueError(f"not a cron expression ({err}); e.g. '0 2 * * *' for 02:00 every day") from None
        if not value.startswith("@") and len(value.split()) not in (5, 6):
            raise ValueError("use 5 fields (minute hour day month weekday) or 6 (with seconds last)")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown time zone; use an IANA name such as 'UTC' or 'Europe/Zurich'") from None
        return value


class Pipeline(_Section):
    name: str = Field(pattern=NAME)
    rounds: int = Field(10, ge=1)
    min_silos: int = Field(1, ge=1)
    # Flower's fraction_fit: each round asks max(int(n * fraction), min_silos) of the n silos
    # able to train, drawn afresh (seeded by training.seed); 1 asks them all.
    fraction: float = Field(1.0, gt=0, le=1)
    round_timeout_s: float = Field(120.0, gt=0)
    round_retries: int = Field(2, ge=0)  # a round with too few silos is tried again this often
    # An encrypted update of more values than this streams from each silo in signed pieces of
    # this many, added as they arrive (0: whole updates); see OrchestratorSettings.piece_values.
    piece_values: int = Field(1_572_864, ge=0)
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection | None = None  # the built-in tables: a shared schema every silo must match
    task: TaskSection | None = None  # or the user's own PyTorch workload
    silos: list[SiloSection] = Field(min_length=1)
    training: TrainingSection = Field(default_factory=TrainingSection)
    privacy: PrivacySection = Field(default_factory=PrivacySection)
    tracking: TrackingSection = Field(default_factory=TrackingSection)
    resources: ResourcesSection = Field(default_factory=ResourcesSection)
    schedule: ScheduleSection | None = None
    federation: FederationSection | None = None

    def is_remote(self, silo: SiloSection) -> bool:
        return silo.remote if silo.remote is not None else self.federation is not None

    @property
    def remote_silos(self) -> list[str]:
        return [s.name for s in self.silos if self.is_remote(s)]

    @model_validator(mode="after")
    def _remote_or_path(self) -> Pipeline:
        for i, silo in enumerate(self.silos):
            if self.is_remote(silo) and self.federation is None:
                raise ValueError(
                    f"silos[{i}] ({silo.name!r}) is remote = true: add a [federation] section "
                    "(listen, certificate, key, ca) for the sites to connect to"
                )
            if not self.is_remote(silo) and not silo.path:
                raise ValueError(f"silos[{i}] ({silo.name!r}) needs a path (its data), or remote = true")
        return self

    @model_validator(mode="after")
    def _data_or_task(self) -> Pipeline:
        if self.data is not None and self.task is not None:
            raise ValueError(
                "give [data] (the built-in tables) or [task] (your own PyTorch module), not both"
            )
        if self.data is None and self.task is None:
            raise ValueError(
                "a pipeline needs [data] (the built-in tables: target, columns) or [task] "
                "(module = 'my_task.py': your own PyTorch dataset, model and loss)"
            )
        if self.task is not None and {"kind", "hidden"} & self.model.model_fields_set:
            raise ValueError(
                "model.kind = ... builds the built-in tables' model; a [task]'s model() builds its own"
            )
        return self

    @property
    def table(self) -> DataSection:
        """[data], for the steps only the built-in tables have (schema, federated statistics)."""
        if self.data is None:
            raise ValueError(f"pipeline {self.name!r} has a [task], not [data]")
        return self.data

    @model_validator(mode="after")
    def _silos_agree(self) -> Pipeline:
        names = [s.name for s in self.silos]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"silo name(s) {dupes} appear more than once in [[silos]]")
        if self.min_silos > len(self.silos):
            raise ValueError(f"min_silos = {self.min_silos} but only {len(self.silos)} silos are listed")
        if self.tracking.publisher is not None and self.tracking.publisher not in names:
            raise ValueError(f"tracking.publisher {self.tracking.publisher!r} is not a silo")
        packed = self.privacy.packed
        if self.privacy.he == "packed":
            if packed.max_silos is not None and packed.max_silos < len(names):
                raise ValueError(
                    f"privacy.packed.max_silos = {packed.max_silos} but {len(names)} silos are listed: "
                    "their sum would overflow the packed lanes"
                )
            headroom = max(1, (packed.max_silos or len(names)) - 1).bit_length()
            if packed.value_bits + headroom > packed.plain_modulus_bits - 1:
                raise ValueError(
                    f"privacy.packed: {packed.value_bits}-bit values with headroom for "
                    f"{packed.max_silos or len(names)} silos do not fit a {packed.plain_modulus_bits}-bit "
                    "plain modulus; lower value_bits or max_silos"
                )
        check_secagg(self.privacy, len(names))
        check_strategy(self.training, self.privacy.he, len(names), self.min_silos, self.secagg)
        check_dp(self.privacy.dp, self.training, self.privacy.he, self.min_silos, self.secagg)
        if self.privacy.keys is not None and self.privacy.he == "off":
            raise ValueError("privacy.keys is set but privacy.he = 'off' uses no keys")
        return self

    @property
    def secagg(self) -> bool:
        """Secure aggregation on: as set, or by default for packed HE with 3 or more silos."""
        if self.privacy.secagg is None:
            return self.privacy.he == "packed" and len(self.silos) >= 3
        return self.privacy.secagg == "pairwise"

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name

    @property
    def registered_model(self) -> str:
        return self.tracking.registered_model or f"{self.name}-model"

    @property
    def publisher(self) -> str:
        return self.tracking.publisher or self.silos[0].name


@dataclass(frozen=True)
class LoadedPipeline:
    spec: Pipeline
    path: Path  # the file it came from: relative silo paths resolve against its folder
    text: str

    def resolve(self, path_text: str) -> str:
        """A path from the file: absolute as it is, relative to the pipeline file's folder."""
        path = Path(path_text).expanduser()
        return str(path if path.is_absolute() else (self.path.parent / path).resolve())

    def silo_path(self, silo: SiloSection) -> str:
        return self.resolve(silo.path)


class PipelineError(ValueError):
    """A pipeline file a user must fix; each problem says file, line and field."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{path}: invalid pipeline\n  " + "\n  ".join(problems))


def parse_pipeline(text: str, path: Path) -> LoadedPipeline:
    try:
        spec = validate(Pipeline, text, path)
    except FileProblems as err:
        raise PipelineError(path, err.problems) from err
    return LoadedPipeline(spec, path.resolve(), text)


def load_pipeline(path: str | Path) -> LoadedPipeline:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise PipelineError(path, [f"cannot read the pipeline file: {err.strerror}"]) from err
    return parse_pipeline(text, path)


def bundled_example(name: str = "heart-disease") -> Path:
    """A pipeline shipped with fedsilo (`fedsilo run --example NAME`); the default is the
    four-hospital heart-disease one."""
    return Path(__file__).resolve().parent / "examples" / name.replace("-", "_") / "pipeline.toml"


def bundled_examples() -> dict[str, Path]:
    """Every example fedsilo ships: name -> pipeline file."""
    root = Path(__file__).resolve().parent / "examples"
    return {p.parent.name.replace("_", "-"): p for p in sorted(root.glob("*/pipeline.toml"))}


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Nested pipeline -> {"training.lr": "0.05", "silos.0.name": "cleveland", ...}."""
    if isinstance(value, BaseModel):
        value = value.model_dump(by_alias=True)
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        out = {}
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): str(value)}

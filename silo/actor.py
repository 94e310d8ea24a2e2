"""The silo: one organization's Ray actor. Its rows and its secret key never leave it.

A plain class; the runner makes it remote where its resources are known, through
`silo_actor` (which adds the concurrency group ``status`` answers in, even mid-``fit``):

    silo_actor(num_cpus=0.25, num_gpus=0, resources={"silo:cleveland": 1})
        .options(name="silo:cleveland", namespace="heart-disease").remote(spec)

Call order: describe -> public_keys -> (HE keys) -> stats_sums -> stats_squares ->
finish_preprocessing -> per round: fit, (deal_masks), encode_staged, (unmask) -> evaluate /
publish. The steps in brackets run under secure aggregation (``[privacy] secagg``).

Everything a silo sends to be added goes in two steps: a method stages the vector and
returns a proposed range (`privacy.aggregate.bound_hint`), then `encode_staged` encodes
it with the range every silo agreed on, and signs it. A large encrypted update goes through
`encode_staged_pieces` instead: the same encoding, streamed a signed piece at a time.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import ray
import torch
from torch.utils.data import TensorDataset

from privacy.aggregate import bound_hint, encode_weighted
from privacy.codec import Codec, Payload, PlainCodec
from privacy.dp import record_plan
from privacy.keyfile import read_key_file, write_secret_key_file
from privacy.masking import Mask
from privacy.pieces import piece_ranges, piece_tag
from privacy.schemes import SecretKeys, generate_keys, keys_from_secret
from privacy.sealing import SealingKey, seal
from privacy.secagg import Dealt, MaskDeal, MaskingSession, MaskRound, UnmaskRequest, UnmaskShares
from privacy.secure_sum import SecureSumCodec
from privacy.signing import SignedUpdate, UpdateSigner
from silo.config import SiloSpec
from silo.data import (
    DataError,
    SiloDescription,
    describe_frame,
    labels,
    prepare_frame,
    read_table,
    resolve_features,
    split_indices,
)
from silo.exchange import Exchange
from silo.fingerprint import DataVersion, fingerprint
from silo.messages import (
    Evaluation,
    FitConfig,
    FitIns,
    FitRes,
    KeyBundle,
    PublishedModel,
    PublishRequest,
    ServerStepIns,
    ServerStepRes,
    SiloKeys,
    SiloReady,
    SiloStatus,
    StoredPayload,
    decoded,
)
from silo.models import build_model
from silo.preprocess import (
    AgreedSchema,
    Preprocessor,
    apply_missing_policy,
    global_means,
    local_squares,
    local_sums,
)
from silo.privacy_budget import SiloPrivacy
from silo.server_opt import OptState, server_step, server_vectors, split_scaffold
from silo.task import TaskError, TaskSpec
from silo.task_kinds import defaults
from silo.task_run import OpenTask, open_task
from silo.task_run import score as score_task
from silo.train import evaluate, local_steps, local_train
from silo.update import Control, staged_update

logger = logging.getLogger(__name__)

# `status` runs in its own thread, so the orchestrator learns who is alive at the start of a
# round even while a straggler is still training the previous one.
CONCURRENCY_GROUPS = {"control": 1}


def silo_actor(cls: type[SiloWorker] | None = None, **resources: Any) -> Any:
    """``cls`` (a `SiloWorker`) made a Ray actor class with ``resources`` and its concurrency groups."""
    # Ray accepts concurrency_groups at run time; its type stubs do not list it.
    return ray.remote(concurrency_groups=CONCURRENCY_GROUPS, **resources)(cls or SiloWorker)  # type: ignore[call-overload]


def _sealing_context(recipient: str) -> bytes:
    return b"fedsilo/he-secret-context/" + recipient.encode()


def _node_name() -> str:
    try:
        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    except Exception:  # outside Ray
        return ""


def _pick_device() -> torch.device:
    try:
        gpu_ids = ray.get_gpu_ids() if ray.is_initialized() else []
    except Exception:  # outside Ray (tests, validate): no assigned GPU
        gpu_ids = []
    if gpu_ids and torch.cuda.is_available():
        return torch.device("cuda")  # Ray sets CUDA_VISIBLE_DEVICES to the assigned GPU(s)
    return torch.device("cpu")


class SiloWorker:
    def __init__(self, spec: SiloSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self._sealing = SealingKey.generate()
        self._signer = UpdateSigner.generate()
        self._keys: SecretKeys | None = None
        self._codec: Codec | None = PlainCodec() if spec.he.scheme == "off" else None
        if spec.he_secret_path is not None and spec.he.scheme != "off":
            self._install(keys_from_secret(spec.he, read_key_file(spec.he_secret_path, spec.he, secret=True)))
        self._staged: tuple[np.ndarray, float, bool] | None = None
        self._secagg: MaskingSession | None = None  # made on first use, once keys are in place
        self._raw: pd.DataFrame | None = None
        self._schema: AgreedSchema | None = None
        self._train_frame: pd.DataFrame | None = None
        self._val_frame: pd.DataFrame | None = None
        self._dropped = 0
        self._sums: np.ndarray | None = None
        self._pre: Preprocessor | None = None
        self._task: OpenTask | None = None  # a [task] pipeline: the user's splits, model and hooks
        self._exchange: Exchange | None = None  # what is federated of the model; set once ready
        self._data_version = DataVersion("", 0)
        self._warm_note = ""
        self.device = _pick_device()
        self._c_global: np.ndarray | None = None  # SCAFFOLD: c, from the last global payload
        self._c_local: np.ndarray | None = None  # SCAFFOLD: c_i (zeros after a restart)
        self._privacy = SiloPrivacy(spec.dp, spec.dp_state_path) if spec.dp.enabled else None
        self.incarnation = uuid.uuid4().hex  # new after every restart

    # Retried once a crashed silo's process is back: a restart within the orchestrator's
    # status_timeout_s answers (with a new incarnation) and rejoins this round.
    @ray.method(concurrency_group="control", max_task_retries=-1)
    def status(self) -> SiloStatus:
        return SiloStatus(self.name, self.incarnation, self._exchange is not None)

    # -- data ---------------------------------------------------------------

    def describe(self) -> SiloDescription:
        """Read and check the local file (or open the task); problems come back as data, naming this silo."""
        if self.spec.task is not None:
            return self._describe_task(self.spec.task)
        try:
            frame = read_table(self.name, self.spec.path, self.spec.table)
        except DataError as err:
            return SiloDescription(self.name, 0, (), (), (), {}, (), {}, (str(err),))
        description = describe_frame(self.name, frame, self.spec.table)
        if description.ok:
            self._raw = prepare_frame(self.name, frame, description, self.spec.table)
        return description

    def _describe_task(self, spec: TaskSpec) -> SiloDescription:
        try:
            record = self.spec.dp.mode == "record"
            self._task = open_task(spec, self.name, self.spec.path, self.spec.seed, self.device, record)
        except TaskError as err:
            return SiloDescription(self.name, 0, (), (), (), {}, (), {}, (str(err),))
        train, val = self._task.rows
        return SiloDescription(
            self.name, train + val, (), (), (), {}, (), {},
            manifest=self._task.exchange.manifest, task_sha256=self._task.task.sha256,
        )  # fmt: skip

    def prepare_task(self) -> SiloReady:
        """A task's silo, ready for round 1 (`describe` opened it): the seeded initial model."""
        if self._task is None:
            raise TaskError(f"silo {self.name!r}: describe() has not opened the task")
        opened = self._task
        self._model, self._exchange = opened.model, opened.exchange
        self._train_set, self._val_set, self._loss = opened.train, opened.val, opened.task.loss
        if self.spec.initial_model is not None:  # a warm start: the registered version's exchanged vector
            from silo.registered import fetch_task_weights

            assert self.spec.tracking_uri is not None
            uri = self.spec.initial_model
            self._exchange.set(fetch_task_weights(self.spec.tracking_uri, uri, self._exchange.size))
            self._warm_note = f"{uri}: as registered"
        self._initial = self._exchange.snapshot()
        train, val = opened.rows
        self._warm_publishing()
        return SiloReady(
            self.name, train, val, 0, 0, self._exchange.size, str(self.device), _node_name(), "", train + val,
            self._warm_note,
        )  # fmt: skip

    # -- keys ---------------------------------------------------------------

    def public_keys(self) -> SiloKeys:
        return SiloKeys(self._sealing.public_bytes(), self._signer.public_bytes(), self._key_id())

    def _key_id(self) -> str:
        return self._keys.key_id if self._keys is not None else ""

    def _install(self, keys: SecretKeys) -> None:
        self._keys = keys
        self._codec = keys.codec(workers=self.spec.workers)
        backup = self.spec.he_key_backup_path
        if backup is not None and backup != self.spec.he_secret_path:
            write_secret_key_file(backup, self.spec.he, keys)

    def generate_he_keys(self, peers: dict[str, bytes]) -> KeyBundle:
        """Make a fresh HE secret key; seal it to each peer's X25519 key; keep it here."""
        keys = generate_keys(self.spec.he)
        self._install(keys)
        secret = keys.secret_bytes()
        sealed = {
            peer: seal(secret, public, _sealing_context(peer))
            for peer, public in peers.items()
            if peer != self.name
        }
        return KeyBundle(public_context=keys.public_bytes(), key_id=keys.key_id, sealed=sealed)

    def seal_key_for(self, peer: str, sealing_public: bytes) -> bytes:
        """Seal this silo's HE secret key to a (restarted) peer's X25519 key."""
        if self._keys is None:
            raise RuntimeError(f"silo {self.name!r} holds no HE key to share")
        return seal(self._keys.secret_bytes(), sealing_public, _sealing_context(peer))

    def install_he_keys(self, sealed: bytes) -> str:
        """Open the secret key sealed to this silo; return its fingerprint."""
        secret = self._sealing.open(sealed, _sealing_context(self.name))
        self._install(keys_from_secret(self.spec.he, secret))
        return self._key_id()

    def _require_codec(self) -> Codec:
        if self._codec is None:
            raise RuntimeError(f"silo {self.name!r} has no HE keys yet")
        return self._codec

    def _stage(self, values: np.ndarray, weight: float, exact: bool) -> float:
        """Hold ``weight * values`` for `encode_staged`; return the range this silo proposes."""
        self._staged = (values, weight, exact)
        return bound_hint(values, weight)

    def encode_staged(self, tag: str, bound: float, mask: MaskRound | None = None) -> SignedUpdate:
        """Encode what was staged with the agreed range, under ``tag`` ("<phase>/<silo>"), signed;
        with ``mask``, masked for secure aggregation among its members (`deal_masks` came first)."""
        if self._staged is None:
            raise RuntimeError(f"silo {self.name!r} has nothing staged for {tag!r}")
        values, weight, exact = self._staged
        self._staged = None
        masks = self._masking().masks(mask) if mask is not None else ()
        codec = self._require_codec()
        if masks and codec.name == "off":  # a secure sum without HE: masked integers
            codec = SecureSumCodec()
        return self._encode_piece(codec, values, weight, tag, tag, bound, exact, masks)

    def encode_staged_pieces(
        self, tag: str, bound: float, piece_values: int, length: int
    ) -> Iterator[SignedUpdate]:
        """`encode_staged` a piece at a time (a Ray streaming generator, so the orchestrator adds
        piece i while this silo encrypts the next): `encode_staged_piece` for each piece of the
        ``length`` values the orchestrator expects."""
        for index in range(len(piece_ranges(length, piece_values))):
            yield self.encode_staged_piece(tag, bound, piece_values, index, length)

    def encode_staged_piece(
        self, tag: str, bound: float, piece_values: int, index: int, length: int
    ) -> SignedUpdate:
        """Piece ``index`` of what was staged: ``privacy.pieces.piece_ranges(length,
        piece_values)[index]``, encoded under ``tag`` and signed for ``piece_tag(tag, index, n)``.
        What was staged stays staged: if another silo fails mid-stream, the orchestrator asks
        the others again under a new tag (the next ``fit`` replaces it)."""
        if self._staged is None:
            raise RuntimeError(f"silo {self.name!r} has nothing staged for {tag!r}")
        values, weight, exact = self._staged
        if values.size != length:
            raise ValueError(f"silo {self.name!r} staged {values.size} values; the sum expects {length}")
        ranges = piece_ranges(length, piece_values)
        a, b = ranges[index]
        return self._encode_piece(
            self._require_codec(), values[a:b], weight, tag, piece_tag(tag, index, len(ranges)), bound,
            exact, (), a,
        )  # fmt: skip

    def _encode_piece(
        self, codec: Codec, values: np.ndarray, weight: float, tag: str, signed_for: str, bound: float,
        exact: bool, masks: Sequence[Mask], offset: int = 0,
    ) -> SignedUpdate:  # fmt: skip
        """Enc(weight * values) under the encoding ``tag``, signed for ``signed_for``."""
        item = encode_weighted(
            codec, values, weight, bound=bound, tag=tag, exact=exact, masks=masks, offset=offset
        )
        return self._signer.sign(self.name, signed_for, item)

    # -- secure aggregation (privacy/secagg.py) ------------------------------------

    def _masking(self) -> MaskingSession:
        if self._secagg is None:
            self._secagg = MaskingSession(self.name, self._sealing)
        return self._secagg

    def trust_orchestrator(self, key: bytes) -> None:
        """At set-up: the orchestrator's Ed25519 key, which must sign every unmask request."""
        if self._masking().trust(key):
            logger.warning(
                "silo %s: the orchestrator's signing key changed (a new orchestrator set up)", self.name
            )

    def deal_masks(self, ins: MaskDeal) -> Dealt:
        """Draw this sum's self-mask, derive the pair seeds, share both t-of-n to the members."""
        # pair keys are bound to the federation's HE key (none: the plaintext secure sum)
        return self._masking().deal(ins, f"fedsilo/{self._key_id() or 'plain'}")

    def unmask(self, request: UnmaskRequest) -> UnmaskShares:
        """Shares for the orchestrator's signed survivor and dropped sets (refused if they
        differ from an earlier answer, or leave fewer survivors than the threshold)."""
        return self._masking().unmask(request)

    # -- federated preprocessing ------------------------------------------------

    def stats_sums(self, schema: AgreedSchema) -> float:
        """Split train/validation, then stage the pass-1 sums over the training rows."""
        if self._raw is None:
            raise DataError(f"silo {self.name!r}: describe() has not loaded valid data")
        spec = self.spec.table
        frame = apply_missing_policy(self._raw, schema, spec.missing)
        self._dropped = len(self._raw) - len(frame)
        self._data_version = fingerprint(frame, (*schema.features, spec.target))
        y = labels(spec, frame[spec.target]).to_numpy()
        if len(frame) == 0:
            raise DataError(
                f"silo {self.name!r}: only {len(frame)} rows (0 class) left after "
                f"[data] missing = {spec.missing!r} dropped {self._dropped}; use missing = 'impute'"
            )
        if len(set(y)) < 2 and self._dropped:
            # the description saw two classes; a single class trains too (its AUC is undefined)
            logger.warning("silo %s: one class left after dropping %d rows", self.name, self._dropped)
        # A tiny silo trains all the same: fewer rows than batch_size make one smaller batch, and a
        # split with fewer validation rows than classes reports its figures over the rows it has.
        train, val = split_indices(y, spec.validation_fraction, spec.seed)
        self._schema = schema
        self._train_frame = frame.iloc[train].reset_index(drop=True)
        self._val_frame = frame.iloc[val].reset_index(drop=True)
        return self._stage(local_sums(self._train_frame, schema), 1.0, exact=True)

    def stats_squares(self, sums: Payload) -> float:
        assert self._schema is not None and self._train_frame is not None
        self._sums = self._require_codec().decode(sums)
        means = global_means(self._schema, self._sums)
        return self._stage(local_squares(self._train_frame, self._schema, means), 1.0, exact=True)

    def _warm_publishing(self) -> None:
        """The publishing silo imports what publishing needs (MLflow's model flavours, and
        torch.export for the tables' program) and opens the run's store, on a thread while
        rounds run: about 4 s of CPU off the path after the last round."""
        if not self.spec.publishes:
            return
        tables, uri = self.spec.task is None, self.spec.tracking_uri

        def imports() -> None:
            try:
                import mlflow.pyfunc  # noqa: F401
                from mlflow.models import infer_signature  # noqa: F401

                if tables:
                    import torch.export.dynamic_shapes  # noqa: F401
                if uri is not None:
                    from mlflow.tracking import MlflowClient

                    MlflowClient(uri)  # MLflow keeps the store per URI: publish() finds it open
            except Exception as err:  # publish() does it again and reports the error there
                logger.debug("warming MLflow up failed: %s", err)

        threading.Thread(target=imports, name="fedsilo-warm-mlflow", daemon=True).start()

    def finish_preprocessing(self, squares: Payload) -> SiloReady:
        assert self._schema is not None and self._sums is not None
        assert self._train_frame is not None and self._val_frame is not None
        spec = self.spec
        self._pre = Preprocessor.from_sums(
            self._schema,
            spec.table.target,
            spec.table.positive,
            self._sums,
            self._require_codec().decode(squares),
            na_values=spec.table.na_values,
        )
        # the built-in task's data: tensors on the silo's device, indexed whole by the one loop
        self._train_set = self._tensors(self._train_frame)
        self._val_set = self._tensors(self._val_frame)
        self._loss = defaults("binary" if self._pre.binary else "multiclass")["loss"]
        self._model = build_model(spec.model, self._schema.n_inputs, self._schema.n_outputs, spec.seed)
        exchange = Exchange(self._model)
        self._initial = exchange.snapshot()
        if spec.initial_model is not None:
            self._warm_start(spec.initial_model, exchange)
        self._model.to(self.device)
        self._exchange = exchange
        self._warm_publishing()
        return SiloReady(
            self.name,
            len(self._train_set),
            len(self._val_set),
            self._dropped,
            self._schema.n_inputs,
            exchange.size,
            str(self.device),
            _node_name(),
            self._data_version.sha256,
            self._data_version.rows,
            self._warm_note,
        )

    def _tensors(self, frame: pd.DataFrame) -> TensorDataset:
        assert self._pre is not None
        x, y = self._pre.transform(frame), self._pre.encode_target(frame[self.spec.table.target])
        return TensorDataset(torch.from_numpy(x).to(self.device), torch.from_numpy(y).to(self.device))

    def _warm_start(self, model_uri: str, exchange: Exchange) -> None:
        """The registered model's weights (rebased to this run's preprocessing) as round 1's model."""
        from silo.registered import fetch, warm_start_weights

        assert self._pre is not None and self.spec.tracking_uri is not None
        registered = fetch(self.spec.tracking_uri, model_uri)
        self._initial, note = warm_start_weights(registered, self._model, self._pre)
        exchange.set(self._initial)
        self._warm_note = f"{model_uri}: {note}"

    def rejoin(self, schema: AgreedSchema | None, sums: Payload | None, squares: Payload | None) -> SiloReady:
        """After a restart: the same split and preprocessing from the federation's stored sums
        (a task: its splits and seeded model again; `describe` has opened it)."""
        if self.spec.task is not None:
            return self.prepare_task()
        assert schema is not None and sums is not None and squares is not None
        self.stats_sums(schema)
        self.stats_squares(sums)
        self._staged = None
        return self.finish_preprocessing(squares)

    # -- rounds ---------------------------------------------------------------

    def _load_global(self, payload: Payload | StoredPayload | None) -> None:
        """Load the global model; a SCAFFOLD payload [w ; c] also sets c."""
        exchange, n = self._ready(), self._initial.size
        if payload is None:
            flat = self._initial
        else:  # a model: at its own precision (what loading it rounds to); SCAFFOLD's c stays float64
            flat = decoded(
                self._require_codec(), payload, exchange.dtype if payload.length == n else np.float64
            )
        weights, self._c_global = split_scaffold(flat, n)
        exchange.set(weights)

    def _ready(self) -> Exchange:
        if self._exchange is None:
            raise RuntimeError(f"silo {self.name!r} is not prepared (set-up has not finished)")
        return self._exchange

    def _evaluate(self) -> Evaluation:
        if self._task is not None:
            return score_task(self._task, self.name, self.device)
        assert self._pre is not None
        return evaluate(self._model, self._val_set, self._pre.binary, self.device, self.name)

    def fit(self, ins: FitIns) -> FitRes:
        """Score the incoming global model, train locally, stage n_k * w_k for `encode_staged`
        (with DP: DP-SGD, or a clipped and noised update; weight 1 under uniform weighting)."""
        exchange = self._ready()
        start = time.perf_counter()
        self._staged = None
        self._load_global(ins.global_payload)
        evaluation = self._evaluate()
        round_seed = zlib.crc32(f"{ins.config.seed}/{ins.round}/{self.name}".encode())
        examples = len(self._train_set)  # type: ignore[arg-type]
        dp, config = self._privacy, ins.config
        control = None
        if config.scaffold:
            assert self._c_global is not None
            c_local = self._c_local if self._c_local is not None else np.zeros_like(self._c_global)
            control = Control(self._c_global, c_local)
        begin = exchange.snapshot()
        if dp is None:
            params = exchange.trainable()  # first in the exchanged vector; float buffers follow
            trained = sum(p.numel() for p in params)
            loss = local_train(
                self._model, self._train_set, self._loss, config, self.device, round_seed,
                correction=None if control is None else (control.c_global - control.c_local)[:trained],
                params=params,
            )  # fmt: skip
        else:
            record = dp.config.mode == "record"
            epochs, batch = config.local_epochs, config.batch_size
            plan = record_plan(examples, batch, epochs, config.local_steps) if record else None
            rate, steps = plan or (1.0, 1)
            sigma = dp.plan(rate, steps)
            refusal = dp.refusal(rate, steps)
            if refusal is not None:
                logger.warning("silo %s, round %d: %s", self.name, ins.round, refusal)
                return FitRes(
                    self.name, ins.round, examples=examples, evaluation=evaluation, error=refusal,
                    epsilon=dp.epsilon(), noise_multiplier=sigma, budget_spent=True,
                )  # fmt: skip
            loss = self._private_train(dp, config, round_seed, sigma)
        weights = exchange.snapshot()
        seconds = time.perf_counter() - start
        epsilon = dp.epsilon() if dp is not None else None
        sigma_used = dp.noise_multiplier if dp is not None else None
        if np.all(np.isfinite(weights)):
            # clip_norm (and SCAFFOLD's control half) after any DP noise: post-processing
            staged = staged_update(begin, weights, config, local_steps(examples, config), control)
            weights, self._c_local = staged.vector, staged.c_local
        del begin  # a large model: staged below, nothing else held
        if not np.all(np.isfinite(weights)):
            return FitRes(
                self.name, ins.round, examples=examples, train_loss=loss, evaluation=evaluation,
                seconds=seconds, error="local update has NaN or infinite weights (learning rate too high?)",
                epsilon=epsilon, noise_multiplier=sigma_used,
            )  # fmt: skip
        uniform = config.weighting == "uniform" or (dp is not None and dp.config.mode == "silo")
        hint = self._stage(weights, 1.0 if uniform else float(examples), exact=False)
        return FitRes(
            self.name, ins.round, hint, examples, loss, evaluation, seconds,
            epsilon=epsilon, noise_multiplier=sigma_used,
        )  # fmt: skip

    def _private_train(self, dp: SiloPrivacy, config: FitConfig, round_seed: int, sigma: float) -> float:
        """Train with DP (record: DP-SGD; silo: clipped update plus a noise share); spend budget."""
        from silo.dp_train import dp_local_train

        exchange = self._ready()
        # Noise and Poisson sampling must be unpredictable: a secret seed, never the round seed.
        secret = int.from_bytes(os.urandom(8), "little")
        if dp.config.mode == "record":
            loss, rate, steps = dp_local_train(
                self._model, self._train_set, self._loss, config, self.device, secret, sigma,
                dp.config.max_grad_norm,
            )  # fmt: skip
            dp.spend(rate, steps)
            return loss
        start = exchange.get()
        loss = local_train(self._model, self._train_set, self._loss, config, self.device, round_seed)
        exchange.set(dp.privatize(start, exchange.get(), np.random.default_rng(secret)))
        dp.spend(1.0, 1)
        return loss

    def initial_weights(self) -> Payload:
        """The seeded round-0 model, in plaintext mode only: the orchestrator's reference for
        bounding round 1's updates (``clip_norm``). Under HE it never sees a model."""
        if self.spec.he.scheme != "off":
            raise RuntimeError("the initial model is sent in the clear only when privacy.he = 'off'")
        return PlainCodec().encode(self._initial)

    def server_step(self, ins: ServerStepIns) -> ServerStepRes:
        """As the round's server-step leader: decrypt the average, the previous global model and
        the optimizer state, apply the step every silo would apply, re-encrypt and sign each."""
        codec = self._require_codec()
        signed = [
            self._encode_piece(codec, values, 1.0, tag, tag, bound_hint(values), exact, ())
            for tag, values, exact in self._server_vectors(ins)
        ]
        return ServerStepRes(signed[0], tuple(signed[1:]))

    def server_step_pieces(self, ins: ServerStepIns, piece_values: int) -> Iterator[SignedUpdate]:
        """`server_step` a piece at a time (a Ray streaming generator, so the orchestrator never
        holds a whole vector): each vector of `server_vectors` in ``piece_ranges(length,
        piece_values, codec.chunk_values(exact))``, signed for ``piece_tag(tag, i, n)``."""
        codec = self._require_codec()
        for tag, values, exact in self._server_vectors(ins):
            bound = bound_hint(values)  # one range for the whole vector
            ranges = piece_ranges(values.size, piece_values, codec.chunk_values(exact))
            for index, (a, b) in enumerate(ranges):
                signed_for = piece_tag(tag, index, len(ranges))
                yield self._encode_piece(codec, values[a:b], 1.0, tag, signed_for, bound, exact, (), a)

    def _server_vectors(self, ins: ServerStepIns) -> list[tuple[str, np.ndarray, bool]]:
        """(tag, values, exact) of each vector the leader sends back, in `server_vectors` order."""
        codec = self._require_codec()
        average = decoded(codec, ins.average)
        if ins.opt is None:  # re-encryption only: the average, one fresh ciphertext per block
            if not np.all(np.isfinite(average)):
                raise ValueError("the average has NaN or infinite weights")
            vectors = [average]
        else:
            previous = self._initial if ins.previous is None else decoded(codec, ins.previous)
            state = OptState(*(decoded(codec, p) for p in ins.state)) if ins.state else None
            weights, new_state = server_step(ins.opt, previous, average, state)
            if not np.all(np.isfinite(weights)):
                raise ValueError("server step produced NaN or infinite weights (server_lr too high?)")
            vectors = [weights, *new_state.vectors()]
        named = zip(server_vectors(ins.opt), vectors, strict=True)
        return [(f"round-{ins.round}/server/{name}", v, exact) for (name, exact), v in named]

    def evaluate(self, payload: Payload | StoredPayload | None) -> Evaluation:
        self._load_global(payload)
        return self._evaluate()

    def score_models(self, model_uris: tuple[str, ...], tracking_uri: str) -> dict[str, Evaluation]:
        """Score registered models on this silo's held-out rows (the training split's
        validation rows); only sums come back. `describe` must have loaded the data."""
        from silo.registered import fetch, fetch_task_module, score, validation_rows

        if self.spec.task is not None:  # a task: each version's module on this silo's validation split
            if self._task is None:
                raise TaskError(f"silo {self.name!r}: describe() has not opened the task")
            task = self._task
            modules = {uri: fetch_task_module(tracking_uri, uri).to(self.device) for uri in model_uris}
            return {
                uri: score_task(replace(task, model=m), self.name, self.device) for uri, m in modules.items()
            }
        if self._raw is None:
            raise DataError(f"silo {self.name!r}: describe() has not loaded valid data")
        features = resolve_features(self.spec.table, list(self._raw.columns))
        rows = validation_rows(self._raw, features, self.spec.table)
        return {uri: score(fetch(tracking_uri, uri), rows, self.name) for uri in model_uris}

    def publish(self, payload: Payload | StoredPayload, request: PublishRequest) -> PublishedModel:
        """Decrypt the final global model here and register it in MLflow."""
        from silo.publish import publish_model, publish_task_model

        self._load_global(payload)
        if self._task is not None:
            assert self.spec.task is not None
            return publish_task_model(
                self._model, self._ready().get(), self.spec.task, self._task.task, request
            )
        assert self._pre is not None
        return publish_model(self._model, self._pre, request)

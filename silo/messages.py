"""Frozen values exchanged between the orchestrator and silos (through Ray)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from privacy.codec import Codec, Payload
from privacy.pieces import decode_pieces, join
from privacy.signing import SignedUpdate
from silo.server_opt import ServerOpt


@dataclass(frozen=True)
class StoredPayload:
    """A sum finished piece by piece (orchestrator/pieces.py) whose pieces wait in Ray's object
    store: the orchestrator holds references, never the bytes; whoever decodes it fetches them."""

    pieces: tuple[Any, ...]  # a ray.ObjectRef per finished piece (each a Payload), in order
    length: int  # values in the whole vector
    terms: tuple[str, ...]  # the encodings summed in
    nbytes: int  # of all pieces together

    def fetched(self) -> Payload:
        import ray  # here, not at import: the CLI sets Ray's auth mode before Ray is imported

        return join(list(ray.get(list(self.pieces))))


def fetched(payload: Payload | StoredPayload) -> Payload:
    """The payload itself, with a stored one's pieces fetched and joined."""
    return payload.fetched() if isinstance(payload, StoredPayload) else payload


def decoded(
    codec: Codec, payload: Payload | StoredPayload, dtype: np.dtype | type = np.float64
) -> np.ndarray:
    """``codec.decode`` of a payload, as ``dtype``; a stored one a piece at a time, each fetched
    while the one before it decodes, so a silo holds one or two pieces' bytes beside the
    decoded vector, never the whole sum's."""
    if not isinstance(payload, StoredPayload):
        return codec.decode(payload).astype(dtype, copy=False)
    import ray

    refs = list(payload.pieces)

    def pieces() -> Iterator[Payload]:
        for index, ref in enumerate(refs):
            if index + 1 < len(refs):  # start pulling the next piece to this node
                ray.wait([refs[index + 1]], timeout=0, fetch_local=True)
            yield ray.get(ref)

    return decode_pieces(codec, pieces(), payload.length, dtype)


@dataclass(frozen=True)
class FitConfig:
    """What a silo does locally in one round; made by the orchestrator's strategy."""

    local_epochs: int
    batch_size: int
    lr: float
    optimizer: str = "sgd"  # sgd | adam
    momentum: float = 0.0
    proximal_mu: float = 0.0  # FedProx: > 0 adds (mu/2)||w - w_global||^2
    seed: int = 0
    clip_norm: float = 0.0  # > 0: the silo bounds ||w_k - w_global||_2 before staging its update
    scaffold: bool = False  # SCAFFOLD: corrected gradients, the update is [w_k ; c + delta c_k]
    # Aggregation weight a silo stages: its training rows, or 1 (silo-level DP: sensitivity C/K)
    weighting: Literal["examples", "uniform"] = "examples"
    # A number of batches per round (FLamby's count of local work) instead of local_epochs passes
    local_steps: int | None = None


@dataclass(frozen=True)
class FitIns:
    round: int
    global_payload: Payload | StoredPayload | None  # None in round 1: silos build the seeded initial model
    config: FitConfig


@dataclass(frozen=True)
class Evaluation:
    """A model scored on one silo's validation rows: sums, so they combine exactly."""

    silo: str
    examples: int
    loss_sum: float
    correct: int
    # Binary targets: histograms of P(positive) for positive and negative rows, for a
    # federated ROC AUC without sharing scores.
    positive_hist: tuple[int, ...] | None = None
    negative_hist: tuple[int, ...] | None = None
    # Every sum the task's metrics() returned ({name: number or array}); the fields above are
    # the built-in tables' view of them. None: only the fields above were summed.
    sums: dict[str, Any] | None = None

    def as_sums(self) -> dict[str, Any]:
        """The sums a finalize turns into figures."""
        if self.sums is not None:
            return self.sums
        sums: dict[str, Any] = {"loss_sum": self.loss_sum, "count": self.examples, "correct": self.correct}
        if self.positive_hist is not None and self.negative_hist is not None:
            sums["positive_hist"] = np.asarray(self.positive_hist)
            sums["negative_hist"] = np.asarray(self.negative_hist)
        return sums

    @property
    def loss(self) -> float:
        """Mean loss; NaN (undefined) over no rows."""
        return self.loss_sum / self.examples if self.examples else float("nan")

    @property
    def accuracy(self) -> float:
        """Share of rows classified right; NaN (undefined) over no rows."""
        return self.correct / self.examples if self.examples else float("nan")


@dataclass(frozen=True)
class FitRes:
    """Phase 1 of a round: metrics and the silo's proposed range. The update itself stays
    staged in the silo until the orchestrator asks for it with the agreed range."""

    silo: str
    round: int
    bound_hint: float = 0.0  # see privacy.aggregate.bound_hint
    examples: int = 0  # training rows: the aggregation weight
    train_loss: float = float("nan")
    evaluation: Evaluation | None = None  # the incoming global model on local validation
    seconds: float = 0.0
    error: str | None = None
    # Differential privacy (privacy.dp != "off"): what this silo has spent so far, with which noise
    epsilon: float | None = None
    noise_multiplier: float | None = None
    budget_spent: bool = False  # refused to train: the round would exceed its privacy budget

    def has_error(self) -> bool:
        return self.error is not None


@dataclass(frozen=True)
class SiloKeys:
    """A silo's public keys, registered by the orchestrator at set-up."""

    sealing: bytes  # X25519: peers seal the HE secret key to it
    signing: bytes  # Ed25519: every update this silo sends is signed with its private half
    he_key_id: str = ""  # fingerprint of a provisioned HE key ("" until keys are exchanged)


@dataclass(frozen=True)
class KeyBundle:
    """What the key-generating silo hands the orchestrator: nothing it can decrypt with."""

    public_context: bytes  # encryption parameters only
    key_id: str  # fingerprint of the secret key, to refuse ciphertexts under another key
    sealed: dict[str, bytes]  # peer silo -> secret key sealed to that silo's X25519 key


@dataclass(frozen=True)
class SiloStatus:
    """Who is answering: a restarted actor has a new incarnation and nothing loaded."""

    silo: str
    incarnation: str
    ready: bool  # data prepared and model built: can train this round


@dataclass(frozen=True)
class SiloReady:
    silo: str
    train_rows: int
    val_rows: int
    dropped_rows: int
    n_inputs: int
    n_parameters: int
    device: str
    node: str = ""  # the Ray node it runs on (its organization's, when pinned)
    data_sha256: str = ""  # data version: hash of the rows it trains and validates on
    data_rows: int = 0
    warm_start: str = ""  # how a registered model became the initial model ("" when cold)


@dataclass(frozen=True)
class PublishRequest:
    tracking_uri: str
    run_id: str
    registered_model: str
    alias: str = "challenger"
    version_tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PublishedModel:
    name: str
    version: str
    alias: str
    model_uri: str


@dataclass(frozen=True)
class ServerStepIns:
    """What the server-step leader decrypts: this round's Enc(average), Enc(previous global)
    (None in round 1: the seeded initial model) and the encrypted optimizer state (empty at first)."""

    round: int
    average: Payload | StoredPayload
    previous: Payload | StoredPayload | None
    state: tuple[Payload | StoredPayload, ...]
    # None: re-encryption only. A packed sum carries one c1 seed per silo, which every silo
    # would regenerate to decrypt it; the leader does it once and sends one fresh ciphertext.
    opt: ServerOpt | None


@dataclass(frozen=True)
class ServerStepRes:
    """The new global model and optimizer state, each re-encrypted and signed by the leader
    under its own tag, ``round-<r>/server/<name>`` (``global``, ``m``, ``v``)."""

    global_update: SignedUpdate
    state: tuple[SignedUpdate, ...]

"""What the orchestrator reports to its driver: frozen records, one per step."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from orchestrator.errors import SiloFailure
from orchestrator.metrics import GlobalEval
from privacy.codec import Payload
from silo.data import SiloDescription
from silo.messages import SiloReady, StoredPayload, fetched
from silo.preprocess import AgreedSchema


@dataclass(frozen=True)
class SetupReport:
    schema: AgreedSchema | None  # None for a task (its own data; no shared table schema)
    descriptions: tuple[SiloDescription, ...]
    ready: tuple[SiloReady, ...]
    codec: dict[str, str]  # HE parameters, for tags
    n_parameters: int
    seconds: float
    bytes_up: int
    bytes_down: int


@dataclass(frozen=True)
class RoundRecord:
    round: int
    participants: tuple[str, ...]
    failures: tuple[SiloFailure, ...]
    late: tuple[str, ...]
    seconds: float
    bytes_up: int
    bytes_down: int
    train_loss: dict[str, float]
    incoming: GlobalEval | None  # the model this round started from (after round - 1)
    rejoined: tuple[str, ...] = ()  # silos that had restarted and rejoined before this round
    attempts: int = 1  # tries it took (see OrchestratorSettings.round_retries)
    aggregate_seconds: float = 0.0  # the orchestrator's own work: verifying and adding updates
    rejected: tuple[str, ...] = ()  # silos whose update was refused (NaN, wrong length/key, forged)
    # Differential privacy: each silo's epsilon spent so far and its noise multiplier (silos that
    # trained or refused this round; a silo that trained spent budget even if its update was lost)
    epsilon: dict[str, float] = field(default_factory=dict)
    noise_multiplier: dict[str, float] = field(default_factory=dict)
    idle: tuple[str, ...] = ()  # able to train but not drawn this round (fraction < 1)
    train_seconds: dict[str, float] = field(default_factory=dict)  # each silo's local training


@dataclass(frozen=True)
class OrchestratorState:
    """What a checkpoint needs from the orchestrator: ciphertexts and public parameters only."""

    round: int  # the last completed round
    # Enc(global model after `round`); stored: its pieces in the object store (`fetched` before saving)
    global_payload: Payload | StoredPayload | None
    public_context: bytes | None  # the HE parameters the silos' key belongs to
    key_id: str  # fingerprint of that key
    server_state: tuple[Payload | StoredPayload, ...] = ()  # Enc(m), Enc(v) of FedAdam, FedYogi, ...

    def fetched(self) -> OrchestratorState:
        """This state with its payloads' bytes (a checkpoint file cannot hold object refs)."""
        return replace(
            self,
            global_payload=None if self.global_payload is None else fetched(self.global_payload),
            server_state=tuple(fetched(p) for p in self.server_state),
        )

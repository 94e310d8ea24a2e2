"""How the orchestrator runs rounds; built from the pipeline file by `pipelines.build`."""

from __future__ import annotations

from dataclasses import dataclass, field

from privacy.params import HEConfig
from silo.task import TaskSpec


@dataclass(frozen=True)
class OrchestratorSettings:
    min_silos: int
    # Silos that have not trained within this are left out of the round; encoding with the
    # agreed range then gets the same time again.
    round_timeout_s: float
    he: HEConfig = field(default_factory=HEConfig)
    # Out-of-band keys (`fedsilo keys init`): (public context, key id). None: a fresh key
    # set per run, made by one silo and sealed to the others.
    provisioned_public: tuple[bytes, str] | None = None
    # Set-up waits for every silo (actor start, data load, keys): generous, but bounded.
    setup_timeout_s: float = 300.0
    # A round with fewer than min_silos is tried again this many times, waiting in between
    # (restarting silos need a few seconds), before the run stops.
    round_retries: int = 2
    retry_wait_s: float = 5.0
    # How long a silo may take to say who it is at the start of a round.
    status_timeout_s: float = 10.0
    # Each round asks max(int(n * fraction), min_silos) of the n silos able to train (1: all),
    # drawn with this seed (the pipeline's training.seed) so a resumed run draws the same.
    fraction: float = 1.0
    selection_seed: int = 0
    # A task pipeline: its file (for finalize, which turns summed metrics into figures); None:
    # the built-in tables (schema, federated statistics, the tables' figures)
    task: TaskSpec | None = None
    # Secure aggregation (privacy/secagg.py): pairwise double masking inside every sum, so that
    # no coalition of the orchestrator with fewer than `secagg_threshold` silos reads an update.
    secagg: bool = False
    secagg_threshold: int | None = None  # None: floor(n/2) + 1 of each sum's members
    # A packed average of more uploads than this is re-encrypted by one silo (the server-step
    # leader) before it is sent to all: each upload leaves a c1 seed in the sum that every
    # decrypting silo would otherwise regenerate (O(silos) each, O(silos^2) in all).
    reseed_above: int = 8
    # An encrypted update of more values than this streams in pieces of this many (rounded to
    # whole ciphertexts: 128 at N = 4096, 3 lanes), so encryption, transfer and addition overlap
    # and the orchestrator holds running sums for about `piece_window` pieces, not the whole
    # model (privacy/pieces.py). 0: every update travels whole. Not under secure aggregation,
    # nor in plaintext (its robust sum checks whole updates).
    piece_values: int = 1_572_864
    # How far (in pieces) a silo may run ahead of the slowest one still sending.
    piece_window: int = 4

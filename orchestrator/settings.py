"""How the orchestrator runs rounds; built from the pipeline file by `pipelines.build`."""

from __future__ import annotations

from dataclasses import dataclass, field

from privacy.params import HEConfig


@dataclass(frozen=True)
class OrchestratorSettings:
    min_silos: int
    round_timeout_s: float
    he: HEConfig = field(default_factory=HEConfig)
    # Out-of-band keys (`fedsilo keys init`): (public context, key id). None: a fresh key
    # set per run, made by one silo and sealed to the others.
    provisioned_public: tuple[bytes, str] | None = None
    # Set-up waits for every silo (actor start, data load, keys): generous, but bounded.
    setup_timeout_s: float = 300.0

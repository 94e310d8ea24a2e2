"""How the orchestrator runs rounds; built from the pipeline file by `pipelines.build`."""

from __future__ import annotations

from dataclasses import dataclass

from privacy.params import CKKSParams


@dataclass(frozen=True)
class OrchestratorSettings:
    min_silos: int
    round_timeout_s: float
    he: str = "ckks"  # ckks | off
    ckks: CKKSParams = CKKSParams()
    # Set-up waits for every silo (actor start, data load, keys): generous, but bounded.
    setup_timeout_s: float = 300.0

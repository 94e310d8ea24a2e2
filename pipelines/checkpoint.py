"""Checkpoints: after every round the driver saves what a resumed run needs.

<tracking.checkpoints>/<run id>/state.pkl       orchestrator state (ciphertexts and public
                                                parameters only), run summary, last round
<tracking.checkpoints>/<run id>/keys/<silo>.key each silo's copy of the run's HE secret key,
                                                written by the silo on its own node (0600)
<tracking.checkpoints>/<run id>/privacy/<silo>.json each silo's privacy accountant (DP runs),
                                                written by the silo on its own node (0600)

fedsilo run PIPELINE --resume RUN_ID
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.records import OrchestratorState, RoundRecord

STATE = "state.pkl"
# How packed (BFV) ciphertexts are written: 2 is the compact format of 2026-12-01 (privacy/compact.py);
# checkpoints written before it (no `wire` field: 1) hold SEAL's own serialization, which no silo reads now.
WIRE = 2


class CheckpointError(ValueError):
    """No usable checkpoint for the run asked to resume."""


@dataclass(frozen=True)
class Checkpoint:
    run_id: str
    orchestrator: OrchestratorState
    summary: dict[str, Any]  # RunSummary.to_dict() so far
    last_record: RoundRecord | None  # re-logged on resume if MLflow never got it
    wire: int = WIRE  # the ciphertext format its payloads are in (see WIRE)


def run_folder(root: Path, run_id: str) -> Path:
    return root / run_id


def key_backup_path(root: Path, run_id: str, silo: str) -> str:
    return str(run_folder(root, run_id) / "keys" / f"{silo}.key")


def privacy_state_path(root: Path, run_id: str, silo: str) -> str:
    return str(run_folder(root, run_id) / "privacy" / f"{silo}.json")


def save(root: Path, checkpoint: Checkpoint) -> Path:
    """Atomically: a crash mid-write leaves the previous checkpoint in place."""
    folder = run_folder(root, checkpoint.run_id)
    folder.mkdir(parents=True, exist_ok=True)
    target, temporary = folder / STATE, folder / f".{STATE}.tmp"
    temporary.write_bytes(pickle.dumps(checkpoint))
    os.replace(temporary, target)
    return target


def load(root: Path, run_id: str) -> Checkpoint:
    path = run_folder(root, run_id) / STATE
    try:
        checkpoint = pickle.loads(path.read_bytes())
    except FileNotFoundError as err:
        raise CheckpointError(
            f"no checkpoint for run {run_id} in {root} (checkpoints are written after each completed round)"
        ) from err
    if not isinstance(checkpoint, Checkpoint) or checkpoint.run_id != run_id:
        raise CheckpointError(f"{path} is not a fedsilo checkpoint of run {run_id}")
    wire = vars(checkpoint).get("wire", 1)  # not the class default: a file from before the field has none
    state = checkpoint.orchestrator
    packed = [p for p in (state.global_payload, *state.server_state) if getattr(p, "codec", "") == "packed"]
    if wire != WIRE and packed:
        raise CheckpointError(
            f"{path} holds packed ciphertexts in an older format (wire {wire}; this fedsilo reads {WIRE}, "
            f"the compact format of 2026-12-01): resume run {run_id} with the fedsilo that wrote it, "
            'or start a new run (warm-started from a registered model: [model] from = "models:/NAME/VERSION")'
        )
    return checkpoint

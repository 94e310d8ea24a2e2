"""Checkpoints name what they cannot resume: packed ciphertexts written before the compact format."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from orchestrator.records import OrchestratorState
from pipelines import checkpoint
from pipelines.checkpoint import WIRE, Checkpoint, CheckpointError
from privacy.codec import PlainCodec
from privacy.packed import PackedKeys
from privacy.params import PackedParams


def _saved(root: Path, run_id: str, scheme: str, wire: int | None) -> None:
    """A checkpoint as fedsilo writes it; ``wire=None``: as written before the field existed."""
    codec = PackedKeys.generate(PackedParams(max_silos=2)).codec() if scheme == "packed" else PlainCodec()
    payload = codec.encode(np.ones(10), bound=1.0, tag="round-1/global")
    state = OrchestratorState(1, payload, None, codec.key_id)
    saved = Checkpoint(run_id, state, {"rounds": []}, None)
    if wire is None:
        del vars(saved)["wire"]  # an older file: unpickled, it has no `wire` of its own
    checkpoint.save(root, saved)


def test_a_checkpoint_of_packed_ciphertexts_in_the_old_format_is_refused_by_name(tmp_path: Path) -> None:
    # Prepare
    _saved(tmp_path, "old-packed", "packed", wire=None)
    _saved(tmp_path, "old-plain", "off", wire=None)
    _saved(tmp_path, "new-packed", "packed", wire=WIRE)
    # Execute / Assert: the old packed one is named with what to do; the others load
    with pytest.raises(CheckpointError, match=r"old-packed.*older format \(wire 1.*resume run old-packed"):
        checkpoint.load(tmp_path, "old-packed")
    assert checkpoint.load(tmp_path, "old-plain").orchestrator.round == 1
    loaded = checkpoint.load(tmp_path, "new-packed")
    assert loaded.wire == WIRE and "wire" in vars(pickle.loads(pickle.dumps(loaded)))

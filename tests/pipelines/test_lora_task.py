"""LoRA adapters of a frozen "pretrained" transformer (tests/silo/tasks/lora_task.py, peft): only the
adapters and the head cross the wire, the frozen base stays on each silo and is hashed, and the
registered model serves without the base file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from privacy.params import HEConfig, PackedParams
from privacy.schemes import generate_keys
from silo.actor import SiloWorker
from silo.config import ModelSpec, SiloSpec
from silo.exchange import ManifestMismatch, check_manifests
from silo.task import TaskSpec
from tests.conftest import kept_in, run_in_process

TASK = Path(__file__).resolve().parents[1] / "silo" / "tasks" / "lora_task.py"
SILOS = ("north", "east", "west")
TRAINABLE, TOTAL = 2081, 21826  # rank 4: LoRA A/B on q, k, v, out and the head's trainable copy


def _pipeline(folder: Path) -> Path:
    silos = "".join(f'\n[[silos]]\nname = "{s}"\npath = "."\n' for s in SILOS)
    text = f'''name = "lora"
rounds = 2
min_silos = 2

[task]
module = "lora_task.py"
kind = "binary"
[task.config]
base = "{folder / "base.pt"}"
rank = 4
{silos}
[training]
local_epochs = 1
batch_size = 32
optimizer = "adam"
lr = 0.01

[tracking]
mlflow_uri = "sqlite:///mlruns.db"
registered_model = "lora-trigger"
'''
    path = folder / "pipeline.toml"
    path.write_text(kept_in(text, folder))
    return path


@pytest.mark.slow
def test_only_the_adapters_cross_the_wire_and_the_model_serves_without_the_base(
    ray_local: None, tmp_path: Path
) -> None:
    pytest.importorskip("peft")  # in the test extras; the import is the task's, not fedsilo's
    import mlflow

    from tests.silo.tasks.lora_task import write_base

    shutil.copy(TASK, tmp_path / "lora_task.py")
    write_base(tmp_path / "base.pt", seed=0)

    summary, _ = run_in_process(_pipeline(tmp_path))

    assert summary["model_parameters"] == TRAINABLE  # of TOTAL: the frozen base never leaves a silo
    keys = generate_keys(HEConfig("packed", packed=PackedParams(max_silos=3)))
    per_silo = [r["bytes_up"] / r["participants"] for r in summary["per_round"]]
    adapters = keys.codec().encode(np.zeros(TRAINABLE), bound=1.0, tag="size").nbytes
    whole = keys.codec().encode(np.zeros(TOTAL), bound=1.0, tag="size").nbytes
    assert all(abs(up - adapters) < 0.05 * adapters for up in per_silo) and whole > 1.5 * adapters
    metrics = [r["metrics"]["accuracy"] for r in summary["per_round"]]
    assert summary["final"]["metrics"]["accuracy"] > metrics[0]
    (tmp_path / "base.pt").unlink()  # the registered model carries the merged frozen base itself
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns.db'}")
    model = mlflow.pyfunc.load_model(f"models:/lora-trigger/{summary['registered_model']['version']}")
    tokens = np.zeros((4, 16), dtype=np.int64)
    tokens[:2, 3] = 7  # the trigger token
    out = model.predict(tokens)
    assert list(out.columns) == ["prediction", "probability"] and out["probability"].between(0, 1).all()


def test_silos_on_different_pretrained_bases_are_named_before_round_1(tmp_path: Path) -> None:
    pytest.importorskip("peft")
    from tests.silo.tasks.lora_task import write_base

    plain = HEConfig("off")
    silos = []
    for name, seed in (("north", 0), ("east", 0), ("west", 1)):  # west loaded another checkpoint
        base = write_base(tmp_path / f"{name}.pt", seed=seed)
        spec = TaskSpec.read(str(TASK), None, "binary", {"base": str(base)})
        silos.append(SiloWorker(SiloSpec(name, str(tmp_path), None, ModelSpec(), he=plain, task=spec)))
    manifests = {s.name: s.describe().manifest for s in silos}
    assert all(m is not None and m.size == TRAINABLE and m.frozen_parameters == TOTAL - TRAINABLE
               for m in manifests.values())  # fmt: skip
    with pytest.raises(
        ManifestMismatch, match=r"silo 'west': its frozen parameters .* differ from silo 'north'"
    ):
        check_manifests({k: v for k, v in manifests.items() if v is not None})

"""What a silo exchanges of its model: the manifest, the flat vector, and the frozen part's hash.

Exchanged, in this order: the trainable parameters (``requires_grad``) in ``named_parameters()``
order, then floating-point buffers (BatchNorm statistics) unless ``buffers = "local"``; integer
buffers never (BatchNorm's batch counter). Frozen parameters (a pretrained backbone loaded inside
the task's ``model``) never leave the silo: every silo reports a hash of them instead, and
silos whose frozen parts differ stop the run before round 1.

    python -c "import torch; from silo.exchange import Exchange; \
print(Exchange.of(torch.nn.Linear(3, 1)).manifest)"
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:  # torch is imported where tensors are touched: the driver and orchestrator never do
    import torch
    from torch import nn

BufferPolicy = Literal["federated", "local"]


class ManifestMismatch(ValueError):
    """Silos whose exchanged tensors differ; the message names the silos and the tensor."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class Manifest:
    """The exchanged tensors in order, and the hash of the tensors that stay (frozen)."""

    tensors: tuple[TensorSpec, ...]
    frozen_sha256: str  # "" when nothing is frozen
    frozen_parameters: int = 0

    @property
    def size(self) -> int:
        return sum(t.size for t in self.tensors)


class Exchange:
    """A model's exchanged tensors, as one float64 vector in manifest order."""

    def __init__(self, model: nn.Module, buffers: BufferPolicy = "federated") -> None:
        self.model = model
        named: list[tuple[str, torch.Tensor]] = [
            (n, p) for n, p in model.named_parameters() if p.requires_grad
        ]
        if buffers == "federated":
            named += [(n, b) for n, b in model.named_buffers() if b.is_floating_point()]
        self._tensors = named
        self._frozen = [(n, p) for n, p in model.named_parameters() if not p.requires_grad]

    @classmethod
    def of(cls, model: nn.Module, buffers: BufferPolicy = "federated") -> Exchange:
        return cls(model, buffers)

    @property
    def manifest(self) -> Manifest:
        specs = tuple(
            TensorSpec(n, tuple(t.shape), str(t.dtype).removeprefix("torch.")) for n, t in self._tensors
        )
        return Manifest(specs, self._frozen_hash(), sum(p.numel() for _, p in self._frozen))

    def _frozen_hash(self) -> str:
        if not self._frozen:
            return ""
        digest = hashlib.sha256()
        for name, tensor in self._frozen:
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}\n".encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    @property
    def size(self) -> int:
        return sum(t.numel() for _, t in self._tensors)

    @property
    def dtype(self) -> np.dtype:
        """The narrowest float type that holds every exchanged value exactly: float32 unless a
        tensor is float64 (half and bfloat16 widen exactly to float32)."""
        import torch

        wide = any(t.dtype == torch.float64 for _, t in self._tensors)
        return np.dtype(np.float64 if wide else np.float32)

    def get(self, dtype: np.dtype | type = np.float64) -> np.ndarray:
        """The exchanged tensors as one vector on the CPU (float64, or ``dtype``: `dtype` keeps
        a copy of a float32 model at its own size), written in place: no per-tensor copies."""
        import torch

        out = np.empty(self.size, dtype=dtype)
        target, offset = torch.from_numpy(out), 0
        with torch.no_grad():
            for _, t in self._tensors:
                target[offset : offset + t.numel()].copy_(t.detach().reshape(-1))  # casts, leaves the device
                offset += t.numel()
        return out

    def snapshot(self) -> np.ndarray:
        """`get` at the model's own precision (`dtype`): the exact copy a silo keeps to compare
        with after training, or stages, at half the size of float64 for a float32 model."""
        return self.get(self.dtype)

    def set(self, flat: np.ndarray) -> None:
        if flat.size != self.size:
            raise ValueError(f"weight vector has {flat.size} values, the model exchanges {self.size}")
        import torch

        offset = 0
        with torch.no_grad():
            for _, t in self._tensors:
                chunk = torch.from_numpy(np.ascontiguousarray(flat[offset : offset + t.numel()]))
                t.copy_(chunk.reshape(t.shape))  # casts to the tensor's dtype and device in one copy
                offset += t.numel()

    def trainable(self) -> list[nn.Parameter]:
        """The parameters the optimizer steps (the exchanged ones that take gradients)."""
        from torch import nn

        return [t for _, t in self._tensors if isinstance(t, nn.Parameter) and t.requires_grad]


def check_manifests(manifests: dict[str, Manifest]) -> None:
    """Every silo must exchange the same tensors over the same frozen base; raise naming who differs."""
    problems = manifest_problems(manifests)
    if problems:
        raise ManifestMismatch("; ".join(problems))


def manifest_problems(manifests: dict[str, Manifest]) -> list[str]:
    """One line per silo whose exchanged tensors or frozen base differ from the majority's."""
    if not manifests:
        return []
    names = list(manifests)
    reference_silo = _majority(names, [manifests[n].tensors for n in names])
    reference = manifests[reference_silo]
    problems = []
    for silo, manifest in manifests.items():
        if manifest.tensors != reference.tensors:
            difference = _first_difference(manifest.tensors, reference.tensors, reference_silo)
            problems.append(f"silo {silo!r}: {difference}")
    bases = _majority(names, [manifests[n].frozen_sha256 for n in names])
    frozen = manifests[bases].frozen_sha256
    for silo, manifest in manifests.items():
        if manifest.frozen_sha256 != frozen:
            problems.append(
                f"silo {silo!r}: its frozen parameters (hash {manifest.frozen_sha256[:12] or 'none'}) differ "
                f"from silo {bases!r}'s ({frozen[:12] or 'none'}): load the same pretrained base everywhere"
            )
    return problems


def _majority(names: Sequence[str], values: Sequence[object]) -> str:
    """The first silo whose value most silos share."""
    counts = [sum(1 for v in values if v == value) for value in values]
    return names[counts.index(max(counts))]


def _first_difference(mine: tuple[TensorSpec, ...], theirs: tuple[TensorSpec, ...], other: str) -> str:
    by_name = {t.name: t for t in theirs}
    for tensor in mine:
        ref = by_name.get(tensor.name)
        if ref is None:
            return f"exchanges tensor {tensor.name!r} that silo {other!r} does not"
        if ref != tensor:
            return (
                f"tensor {tensor.name!r} is {list(tensor.shape)} {tensor.dtype}, "
                f"silo {other!r} has {list(ref.shape)} {ref.dtype}"
            )
    mine_names = {t.name for t in mine}
    for tensor in theirs:
        if tensor.name not in mine_names:
            return f"lacks tensor {tensor.name!r} that silo {other!r} exchanges"
    return f"exchanges its tensors in another order than silo {other!r}"

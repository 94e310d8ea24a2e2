"""LoRA over a frozen "pretrained" transformer: a test task module for fedsilo's frozen-part exchange.

fedsilo exchanges only a model's trainable parameters (``requires_grad``, in ``named_parameters()``
order) plus its float buffers; the frozen rest never leaves a silo, and each silo reports a hash of
it so that silos on different bases stop before round 1 (``silo/exchange.py``). This task makes
that concrete with `peft <https://github.com/huggingface/peft>`_ LoRA, all offline:

* ``write_base(path, seed)`` builds :class:`TinyTransformer` from a seed and ``torch.save``\\ s its
  state dict: the stand-in for a pretrained checkpoint that a test writes before the run (nothing
  is downloaded, no Hugging Face hub or ``transformers`` model class is involved).
* ``model(config)`` builds the same architecture, loads ``config["base"]`` (when given), freezes it
  and wraps it with ``peft.get_peft_model`` and a ``LoraConfig`` on the attention projections
  (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``) at rank ``config["rank"]`` (4). The
  classification head is a ``modules_to_save`` module: peft keeps the loaded head frozen
  (``head.original_module``) and trains a copy (``head.modules_to_save.default``). The trainable
  tensors are therefore the LoRA A/B matrices and that head copy, 2,081 of 21,826 parameters at the
  defaults; the model has no buffers. Every silo gets bit-identical initial weights: the build
  (LoRA A matrices are drawn with kaiming-uniform; B starts at zero) runs under a forked, seeded RNG.
* ``dataset(ctx, split)``: token sequences (length 16, vocabulary 64) whose label is whether the
  trigger token 7 occurs; deterministic from ``ctx.seed``, ``ctx.silo`` and the split.
* ``predict(model, data)``: an (N, 16) integer array -> DataFrame ``probability`` (and
  ``prediction`` 0/1).

``kind = "binary"`` supplies loss (BCE with logits on the single logit), metrics and finalize.

``[task.config]`` keys: ``base`` (path of the base state dict; absent: the seeded random init is
the base), ``rank`` (4), ``alpha`` (2 * rank), ``dropout`` (0.0: LoRA dropout, an ``nn.Identity``
at 0), ``init_seed`` (0: seeds the architecture and the LoRA init), ``train_size`` (256),
``val_size`` (64), ``positive_fraction`` (0.5), ``full`` (false: true federates the whole model
without adapters, the baseline of benchmarks/imaging.py).

    .venv/bin/python -c "import sys; sys.path.insert(0, 'tests/silo/tasks'); import lora_task as t; \
t.write_base('/tmp/base.pt'); m = t.model({'base': '/tmp/base.pt'}); m.print_trainable_parameters()"
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import TensorDataset

VOCAB = 64
LENGTH = 16
WIDTH = 32
HEADS = 4
LAYERS = 2
FFN = 64
TRIGGER = 7  # label 1 iff this token occurs in the sequence
TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]  # LoRA-adapted nn.Linear names
HEAD = "head"


class SelfAttention(nn.Module):
    """Multi-head self-attention with explicit ``nn.Linear`` q/k/v/out projections (LoRA targets)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, width = x.shape
        d = width // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(n, length, self.heads, d).transpose(1, 2)  # (N, heads, L, d)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=-1)
        return self.out_proj((weights @ v).transpose(1, 2).reshape(n, length, width))


class Block(nn.Module):
    """Pre-norm transformer block: attention and a ReLU feed-forward, each residual."""

    def __init__(self, width: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, ffn)
        self.fc2 = nn.Linear(ffn, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(torch.relu(self.fc1(self.norm2(x))))


class TinyTransformer(nn.Module):
    """Token + position embeddings, ``LAYERS`` blocks, mean pooling, one-logit head: 19,745 parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.position = nn.Parameter(torch.randn(LENGTH, WIDTH) * 0.02)
        self.blocks = nn.ModuleList(Block(WIDTH, HEADS, FFN) for _ in range(LAYERS))
        self.norm = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.position[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x).mean(dim=1))  # (N, 1)


def _seeded(seed: int) -> TinyTransformer:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TinyTransformer()


def write_base(path: str | Path, seed: int = 0) -> Path:
    """Write the "pretrained" base: a seeded :class:`TinyTransformer`'s state dict, ``torch.save``\\ d."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(_seeded(seed).state_dict(), path)
    return path


def model(config: Mapping[str, Any]) -> nn.Module:
    """The base (loaded from ``config["base"]``, frozen) wrapped with peft LoRA; the head trainable."""
    from peft import LoraConfig, get_peft_model  # imported here: the task file loads without peft

    config = config or {}
    rank = int(config.get("rank", 4))
    seed = int(config.get("init_seed", 0))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        base = TinyTransformer()
        if config.get("base"):
            state = torch.load(Path(config["base"]), map_location="cpu", weights_only=True)
            base.load_state_dict(state)
        if config.get("full"):  # the baseline: federate the whole model, no adapters
            return base
        base.requires_grad_(False)
        lora = LoraConfig(
            r=rank,
            lora_alpha=float(config.get("alpha", 2 * rank)),
            lora_dropout=float(config.get("dropout", 0.0)),
            target_modules=TARGETS,
            modules_to_save=[HEAD],
            bias="none",
        )
        return get_peft_model(base, lora)


def _rng(seed: int, silo: str, split: str) -> np.random.Generator:
    """Stable across processes (``zlib.crc32``, not the salted ``hash``)."""
    return np.random.default_rng([int(seed), zlib.crc32(silo.encode()), zlib.crc32(split.encode())])


def make_tokens(
    rng: np.random.Generator, n: int, positive_fraction: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sequences over the vocabulary less ``TRIGGER``; positives get it at 1-3 random places."""
    others = np.array([t for t in range(VOCAB) if t != TRIGGER])
    tokens = rng.choice(others, size=(n, LENGTH))
    labels = (rng.random(n) < positive_fraction).astype(np.float32)
    for i in np.flatnonzero(labels):
        places = rng.choice(LENGTH, size=int(rng.integers(1, 4)), replace=False)
        tokens[i, places] = TRIGGER
    return tokens.astype(np.int64), labels


def dataset(ctx: Any, split: str) -> TensorDataset:
    """Items ``(LongTensor (16,), float32 (1,))``; train and val drawn from separate seeded streams."""
    if split not in ("train", "val"):
        raise ValueError(f"split {split!r}: use 'train' or 'val'")
    config: Mapping[str, Any] = ctx.config or {}
    size = int(config.get("train_size" if split == "train" else "val_size", 256 if split == "train" else 64))
    tokens, labels = make_tokens(
        _rng(ctx.seed, ctx.silo, split), size, float(config.get("positive_fraction", 0.5))
    )
    return TensorDataset(torch.from_numpy(tokens), torch.from_numpy(labels).reshape(-1, 1))


def predict(model: nn.Module, data: Any) -> pd.DataFrame:
    """``probability`` that the trigger token occurs, and ``prediction`` (1 at probability >= 0.5)."""
    array = data.to_numpy() if isinstance(data, pd.DataFrame) else np.asarray(data)
    tokens = torch.as_tensor(np.asarray(array, dtype=np.int64).reshape(-1, LENGTH))
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= VOCAB):
        raise ValueError(f"predict(): tokens must lie in [0, {VOCAB})")
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    model.eval()
    with torch.no_grad():
        probability = torch.sigmoid(model(tokens.to(device)).reshape(-1)).double().cpu().numpy()
    return pd.DataFrame({"prediction": (probability >= 0.5).astype(int), "probability": probability})

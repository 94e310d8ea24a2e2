"""Centralized baseline for the breast ultrasound example: the federated run's upper reference.

Builds every site's train and val split with the example's own task module (``breast_task.py``,
``ctx.seed=--seed``, validation fraction 0.2), pools the three sites' train splits, trains
``model({})`` (``torch.manual_seed(--seed)`` before building it) with a plain loop for
``--epochs`` at batch size 32, then scores the final model on the pooled val splits and on each
site's own val split: accuracy at probability 0.5 and ROC AUC (exact, Mann-Whitney, from the
scores). One CPU thread.

    .venv/bin/python benchmarks/imaging_central.py
    .venv/bin/python benchmarks/imaging_central.py --optimizer sgd --lr 0.05 --out /tmp/sgd.json

Published reference (MedMNIST v2, official test split, which we do not have): ResNet-18 (28)
accuracy 0.863, AUC 0.901; the task brief expects about 0.86 / 0.86 from this 56k-parameter CNN.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from silo.task import TaskContext

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "pipelines" / "examples" / "breast_ultrasound"
SITES = ("riverside", "lakeside", "hillcrest")
BATCH = 32


def load_task(path: Path = EXAMPLE / "breast_task.py") -> ModuleType:
    spec = importlib.util.spec_from_file_location("breast_task", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Exact ROC AUC: the Mann-Whitney U statistic over positives x negatives, ties counted 1/2."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def scores_of(net: nn.Module, data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of malignant and the 0/1 targets over a whole dataset."""
    net.eval()
    probs: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    with torch.no_grad():
        for inputs, target in DataLoader(data, batch_size=256):
            probs.append(torch.sigmoid(net(inputs)).reshape(-1).numpy())
            targets.append(target.reshape(-1).numpy())
    return np.concatenate(probs), np.concatenate(targets)


def evaluate(name: str, net: nn.Module, data: Dataset) -> dict[str, Any]:
    probs, targets = scores_of(net, data)
    return {
        "split": name,
        "images": len(targets),
        "malignant": int(targets.sum()),
        "accuracy": float(((probs >= 0.5) == (targets == 1)).mean()),
        "auc": roc_auc(probs, targets),
    }


def make_optimizer(name: str, params: Any, lr: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    raise ValueError(f"optimizer {name!r}: use adam or sgd")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--augment", action="store_true", help="random horizontal flips (seeded)")
    parser.add_argument("--seed", type=int, default=0, help="train/val split, model, shuffle")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "imaging_central.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    task = load_task()
    config = {"augment": args.augment}
    train_sets: dict[str, Dataset] = {}
    val_sets: dict[str, Dataset] = {}
    for site in SITES:
        ctx = TaskContext(path=(EXAMPLE / site).resolve(), silo=site, config=config, seed=args.seed)
        train_sets[site] = task.dataset(ctx, "train")
        val_sets[site] = task.dataset(ctx, "val")
    pooled_train: ConcatDataset = ConcatDataset(list(train_sets.values()))
    pooled_val: ConcatDataset = ConcatDataset(list(val_sets.values()))

    torch.manual_seed(args.seed)
    net = task.model({})
    n_params = sum(p.numel() for p in net.parameters())
    optimizer = make_optimizer(args.optimizer, net.parameters(), args.lr)
    loss_fn = nn.BCEWithLogitsLoss()
    loader = DataLoader(
        pooled_train, batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(args.seed)
    )
    console = Console()
    seen, train_seconds = 0, 0.0
    for epoch in range(1, args.epochs + 1):
        net.train()
        start = time.perf_counter()
        total = 0.0
        for inputs, target in loader:
            optimizer.zero_grad()
            loss = loss_fn(net(inputs), target)
            loss.backward()
            optimizer.step()
            total += float(loss) * len(target)
            seen += len(target)
        train_seconds += time.perf_counter() - start
        if epoch % 10 == 0 or epoch == args.epochs:
            val = evaluate("pooled", net, pooled_val)
            console.log(
                f"epoch {epoch}: train loss {total / len(pooled_train):.4f}, "
                f"val accuracy {val['accuracy']:.3f}, AUC {val['auc']:.3f}"
            )

    images_per_s = seen / train_seconds
    common = {
        "optimizer": args.optimizer,
        "lr": args.lr,
        "epochs": args.epochs,
        "batch_size": BATCH,
        "augment": args.augment,
        "parameters": n_params,
        "train_images": len(pooled_train),
        "train_images_per_s": round(images_per_s, 1),
        "threads": torch.get_num_threads(),
        "seed": args.seed,
    }
    rows = [evaluate("pooled", net, pooled_val)]
    rows += [evaluate(site, net, data) for site, data in val_sets.items()]
    rows = [{**row, **common} for row in rows]

    table = Table(
        title=f"Centralized CNN ({n_params:,} parameters), {args.optimizer} lr {args.lr:g}, "
        f"{args.epochs} epochs, batch {BATCH}: validation"
    )
    for column in ("split", "images", "malignant", "accuracy", "ROC AUC"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for row in rows:
        table.add_row(
            row["split"],
            str(row["images"]),
            str(row["malignant"]),
            f"{row['accuracy']:.3f}",
            f"{row['auc']:.3f}",
        )
    console.print(table)
    console.print(
        f"training: {len(pooled_train)} images, {images_per_s:.0f} images/s on 1 CPU thread "
        f"({train_seconds:.1f} s)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()

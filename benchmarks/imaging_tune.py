"""Tune [training] for the breast ultrasound example: fedsilo's real silos, in-process, no Ray, no HE.

Drives `silo.actor.SiloWorker` for the three hospitals exactly as the orchestrator does (as in
tests/silo/test_task_run.py): every round each silo loads the global model, trains locally with
the given FitConfig (a fresh optimizer every round, as fedsilo does) and stages its weights with
weight = its training rows; the new global model is sum(n_k * w_k) / sum(n_k) (FedAvg), or, for
fedadam / fedyogi / fedadagrad, `silo.server_opt.server_step` applied to that average with the
previous global model (as `SiloWorker.server_step` does). After every round the global model is
scored on the three sites' validation images together (`orchestrator.metrics.combine`: accuracy
at 0.5 and the 100-bin ROC AUC fedsilo reports); ``exact_auc`` is the exact (Mann-Whitney) AUC
over the same images, the figure the centralized baseline (benchmarks/imaging_central.py) uses.
Seconds per round: local training plus averaging, in-process (no start-up, no encryption).
One CPU thread.

    .venv/bin/python benchmarks/imaging_tune.py --rounds 40 --local-epochs 2 --lr 1e-3
    .venv/bin/python benchmarks/imaging_tune.py --optimizer sgd --momentum 0.9 --lr 0.05
    .venv/bin/python benchmarks/imaging_tune.py --strategy fedadam --server-lr 0.03 --json /tmp/a.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata

from orchestrator.metrics import combine
from privacy.codec import Payload, PlainCodec
from privacy.params import HEConfig
from silo.actor import SiloWorker
from silo.config import ModelSpec, SiloSpec
from silo.messages import FitConfig, FitIns
from silo.server_opt import OPTIMIZERS, OptState, ServerOpt, server_step
from silo.task import TaskSpec
from silo.train import outputs_of

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "pipelines" / "examples" / "breast_ultrasound"
SITES = ("riverside", "lakeside", "hillcrest")
CENTRAL = {"accuracy": 0.832, "auc": 0.845}  # docs/results/imaging_central.json, pooled validation
# orchestrator.strategies.SERVER_DEFAULTS: (server_lr, beta1, beta2, tau)
SERVER_DEFAULTS = {
    "fedadam": (0.03, 0.9, 0.99, 1e-9),
    "fedyogi": (0.05, 0.9, 0.99, 1e-3),
    "fedadagrad": (0.1, 0.0, 0.0, 1e-9),
}


def exact_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney ROC AUC, ties counted 1/2."""
    positive = labels.astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def make_silos(width: int, seed: int) -> list[SiloWorker]:
    spec = TaskSpec.read("breast_task.py", EXAMPLE, "binary", {"width": width, "validation_fraction": 0.2})
    silos = [
        SiloWorker(
            SiloSpec(name, str(EXAMPLE / name), None, ModelSpec(), he=HEConfig("off"), seed=seed, task=spec)
        )
        for name in SITES
    ]
    for silo in silos:
        description = silo.describe()
        if not description.ok:
            raise SystemExit(f"{silo.name}: {description}")
        silo.prepare_task()
    return silos


def score(silos: list[SiloWorker], payload: Payload | None, after: int) -> dict[str, float]:
    """The global model on every site's validation images, pooled (fedsilo's figures + exact AUC)."""
    evaluations, probs, targets = [], [], []
    for silo in silos:
        evaluations.append(silo.evaluate(payload))  # loads the global model into silo._model
        logits, target = outputs_of(silo._model, silo._val_set, silo.device)
        probs.append(torch.sigmoid(logits).reshape(-1).cpu().numpy())
        targets.append(target.reshape(-1).cpu().numpy())
    metrics = combine(after, evaluations).metrics
    return {
        "loss": float(metrics["loss"]),
        "accuracy": float(metrics["accuracy"]),
        "auc": float(metrics["auc"]),
        "exact_auc": exact_auc(np.concatenate(probs), np.concatenate(targets)),
    }


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    torch.set_num_threads(1)
    silos = make_silos(args.width, args.seed)
    fit_seed = args.seed if args.fit_seed is None else args.fit_seed
    config = FitConfig(
        local_epochs=args.local_epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
        momentum=args.momentum, proximal_mu=args.mu if args.strategy == "fedprox" else 0.0, seed=fit_seed,
        local_steps=args.local_steps,
    )  # fmt: skip
    opt: ServerOpt | None = None
    if args.strategy in OPTIMIZERS:
        lr, beta1, beta2, tau = SERVER_DEFAULTS[args.strategy]
        opt = ServerOpt(args.strategy, args.server_lr or lr, beta1, beta2, args.tau or tau)
    codec = PlainCodec()
    payload: Payload | None = None
    global_weights = silos[0]._initial.astype(np.float64)
    state: OptState | None = None
    history: list[dict[str, Any]] = []
    print(f"{'round':>5} {'acc':>6} {'auc':>6} {'exact':>6} {'loss':>7} {'train_s':>7}")
    for r in range(1, args.rounds + 1):
        start = time.perf_counter()
        results = [s.fit(FitIns(r, payload, config)) for s in silos]
        errors = [res.error for res in results if res.has_error()]
        if errors:
            raise SystemExit(f"round {r}: {errors}")
        staged = [s._staged for s in silos]
        assert all(item is not None for item in staged)
        total = sum(np.asarray(v, dtype=np.float64) * w for v, w, _ in staged)  # type: ignore[misc]
        average = total / sum(w for _, w, _ in staged)  # type: ignore[misc]
        if opt is not None:
            average, state = server_step(opt, global_weights, average, state)
            if not np.all(np.isfinite(average)):
                raise SystemExit(f"round {r}: server step produced non-finite weights")
        global_weights = np.asarray(average, dtype=np.float64)
        for s in silos:
            s._staged = None
        payload = codec.encode(global_weights)
        seconds = time.perf_counter() - start
        figures = score(silos, payload, r)
        row = {"round": r, **figures, "seconds": seconds}
        history.append(row)
        print(
            f"{r:>5} {figures['accuracy']:>6.3f} {figures['auc']:>6.3f} {figures['exact_auc']:>6.3f} "
            f"{figures['loss']:>7.4f} {seconds:>7.2f}",
            flush=True,
        )
    last = history[-1]
    mean_s = sum(h["seconds"] for h in history) / len(history)
    print(
        f"final: accuracy {last['accuracy']:.3f} ({last['accuracy'] - CENTRAL['accuracy']:+.3f} vs central), "
        f"auc {last['auc']:.3f} / exact {last['exact_auc']:.3f} ({last['exact_auc'] - CENTRAL['auc']:+.3f}), "
        f"{mean_s:.2f} s/round"
    )
    return history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--local-epochs", type=int, default=2)
    parser.add_argument("--local-steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    parser.add_argument("--momentum", type=float, default=0.0)
    parser.add_argument("--strategy", choices=("fedavg", "fedprox", *OPTIMIZERS), default="fedavg")
    parser.add_argument("--mu", type=float, default=0.01, help="FedProx proximal mu")
    parser.add_argument("--server-lr", type=float, default=None, help="default: fedsilo's per strategy")
    parser.add_argument("--tau", type=float, default=None)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="the silos' seed: train/val split, initial model")
    parser.add_argument("--fit-seed", type=int, default=None, help="[training] seed (default: --seed)")
    parser.add_argument("--json", type=Path, default=None, help="write settings and per-round figures")
    args = parser.parse_args()
    history = run(args)
    if args.json is not None:
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        args.json.write_text(json.dumps({"settings": settings, "history": history}, indent=1))


if __name__ == "__main__":
    main()

"""Strategies: what silos do locally each round and how their updates combine.

Aggregation is `privacy.aggregate.WeightedSum`, the same for plaintext and ciphertexts
(plaintext mode uses `orchestrator.robust.RobustSum`, which also checks each update and
runs the robust rules); a strategy picks the local recipe (`configure_fit`), the payload
length, the aggregator and, for FedAdam/FedYogi/FedAdagrad, the server optimizer that a
silo applies to the decrypted average (``server_opt``).

    python -c "from orchestrator.strategies import make_strategy; print(make_strategy('fedyogi'))"
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from orchestrator.robust import RULES, RobustSum
from privacy.aggregate import WeightedPayload
from privacy.codec import Codec, Payload
from silo.messages import FitConfig, StoredPayload
from silo.server_opt import ServerOpt

ROBUST = tuple(rule for rule in RULES if rule != "mean")  # rules that must see single updates


class Aggregator(Protocol):
    weight: float
    count: int

    def add(self, item: WeightedPayload) -> None: ...

    def mean(self) -> Payload | StoredPayload: ...


class Strategy(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def clip_norm(self) -> float: ...

    @property
    def server_opt(self) -> ServerOpt | None: ...

    def configure_fit(self, server_round: int) -> FitConfig: ...

    def payload_length(self, n_parameters: int) -> int: ...

    def aggregator(self, codec: Codec, reference: np.ndarray | None = None) -> Aggregator: ...


@dataclass(frozen=True)
class FedAvg:
    """McMahan et al. 2017: local SGD, average weighted by training rows."""

    local_epochs: int = 1
    local_steps: int | None = None  # batches per round instead of local_epochs passes
    batch_size: int = 32
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.0
    seed: int = 0
    clip_norm: float = 0.0  # > 0: bound ||w_k - w_global|| (silos always; orchestrator when he = off)
    weighting: str = "examples"  # "uniform" under silo-level DP: every silo weighs 1
    name: str = "fedavg"

    def _mu(self) -> float:
        return 0.0

    @property
    def server_opt(self) -> ServerOpt | None:
        return None

    def configure_fit(self, server_round: int) -> FitConfig:
        return FitConfig(
            local_epochs=self.local_epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            optimizer=self.optimizer,
            momentum=self.momentum,
            proximal_mu=self._mu(),
            seed=self.seed,
            clip_norm=self.clip_norm,
            weighting="uniform" if self.weighting == "uniform" else "examples",
            local_steps=self.local_steps,
        )

    def payload_length(self, n_parameters: int) -> int:
        return n_parameters

    def _rule(self) -> tuple[str, dict[str, float | int | str | None]]:
        return "mean", {}

    def aggregator(self, codec: Codec, reference: np.ndarray | None = None) -> Aggregator:
        """Plaintext: `RobustSum` (rejects NaN, bounds norms, robust rules). HE: `WeightedSum`."""
        if codec.name == "off":
            rule, params = self._rule()
            return RobustSum(codec, rule, reference, self.clip_norm, **params)
        from privacy.aggregate import WeightedSum

        return WeightedSum(codec)


@dataclass(frozen=True)
class FedProx(FedAvg):
    """Li et al. 2020: FedAvg plus a proximal term (mu/2)||w - w_global||^2 in local training."""

    mu: float = 0.01
    name: str = "fedprox"

    def _mu(self) -> float:
        return self.mu


@dataclass(frozen=True)
class FedOpt(FedAvg):
    """Reddi et al. 2021: FedAvg's average as a pseudo-gradient for a server optimizer."""

    name: str = "fedadam"
    server_lr: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-9

    @property
    def server_opt(self) -> ServerOpt:
        return ServerOpt(self.name, self.server_lr, self.beta1, self.beta2, self.tau)


@dataclass(frozen=True)
class Scaffold(FedAvg):
    """Karimireddy et al. 2020 (option II): drift-corrected local steps; updates are [w_k ; c + dc_k]."""

    name: str = "scaffold"

    def configure_fit(self, server_round: int) -> FitConfig:
        return replace(super().configure_fit(server_round), scaffold=True)

    def payload_length(self, n_parameters: int) -> int:
        return 2 * n_parameters


@dataclass(frozen=True)
class Robust(FedAvg):
    """A robust rule over single updates; plaintext mode only (the pipeline schema refuses HE)."""

    name: str = "median"
    trim_fraction: float = 0.25
    byzantine: int = 0  # f: Krum's assumed number of Byzantine silos
    multi_krum_m: int | None = None  # multi-Krum averages this many (default n - f)
    robust_weighting: str = "examples"  # median / trimmed mean / geometric median: n_k or "uniform"

    def _rule(self) -> tuple[str, dict[str, float | int | str | None]]:
        params: dict[str, float | int | str | None] = {"trim_fraction": self.trim_fraction}
        params.update(byzantine=self.byzantine, multi_krum_m=self.multi_krum_m)
        params["robust_weighting"] = self.robust_weighting
        return self.name, params

    def aggregator(self, codec: Codec, reference: np.ndarray | None = None) -> Aggregator:
        if codec.name != "off":
            raise ValueError(f"strategy {self.name!r} must see single updates; it needs privacy.he = 'off'")
        return super().aggregator(codec, reference)


# Flower's defaults per server optimizer (fedadam.py, fedyogi.py, fedadagrad.py), but for the
# server learning rates of FedAdam (Flower 0.1) and FedYogi (Flower 0.01): tuned on the bundled
# example, where 0.1 oscillates and 0.01 is too slow for 20 rounds (docs/benchmarks.md).
SERVER_DEFAULTS: dict[str, dict[str, float]] = {
    "fedadam": {"server_lr": 0.03, "beta1": 0.9, "beta2": 0.99, "tau": 1e-9},
    "fedyogi": {"server_lr": 0.05, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3},
    "fedadagrad": {"server_lr": 0.1, "beta1": 0.0, "beta2": 0.0, "tau": 1e-9},
}


def make_strategy(name: str, **params: object) -> Strategy:
    table: dict[str, type[FedAvg]] = {
        "fedavg": FedAvg, "fedprox": FedProx, "scaffold": Scaffold,
        **{n: FedOpt for n in SERVER_DEFAULTS}, **{n: Robust for n in ROBUST},
    }  # fmt: skip
    if name not in table:
        raise ValueError(f"unknown strategy {name!r}; choose one of {sorted(table)}")
    if table[name] is FedOpt:
        params = {**SERVER_DEFAULTS[name], **{k: v for k, v in params.items() if v is not None}}
    return table[name](name=name, **params)  # type: ignore[arg-type]  # checked by the pipeline schema

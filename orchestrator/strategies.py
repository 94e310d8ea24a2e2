"""Strategies: what silos do locally each round and how their updates combine.

Aggregation itself is `privacy.aggregate.WeightedSum`, the same for plaintext and
ciphertexts; a strategy picks the local recipe (`configure_fit`) and the weighting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from privacy.aggregate import WeightedSum
from privacy.codec import Codec
from silo.messages import FitConfig


class Strategy(Protocol):
    @property
    def name(self) -> str: ...

    def configure_fit(self, server_round: int) -> FitConfig: ...

    def aggregator(self, codec: Codec) -> WeightedSum: ...


@dataclass(frozen=True)
class FedAvg:
    """McMahan et al. 2017: local SGD, average weighted by training rows."""

    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.0
    seed: int = 0
    weighting: str = "examples"  # "uniform" under silo-level DP: every silo weighs 1
    name: str = "fedavg"

    def _mu(self) -> float:
        return 0.0

    def configure_fit(self, server_round: int) -> FitConfig:
        return FitConfig(
            local_epochs=self.local_epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            optimizer=self.optimizer,
            momentum=self.momentum,
            proximal_mu=self._mu(),
            seed=self.seed,
            weighting="uniform" if self.weighting == "uniform" else "examples",
        )

    def aggregator(self, codec: Codec) -> WeightedSum:
        return WeightedSum(codec)


@dataclass(frozen=True)
class FedProx(FedAvg):
    """Li et al. 2020: FedAvg plus a proximal term (mu/2)||w - w_global||^2 in local training."""

    mu: float = 0.01
    name: str = "fedprox"

    def _mu(self) -> float:
        return self.mu


def make_strategy(name: str, **params: object) -> Strategy:
    table: dict[str, type[FedAvg]] = {"fedavg": FedAvg, "fedprox": FedProx}
    if name not in table:
        raise ValueError(f"unknown strategy {name!r}; choose one of {sorted(table)}")
    return table[name](**params)  # type: ignore[arg-type]  # checked by the pipeline schema

"""Where silos run: each on its organization's node (custom resource ``silo:<name>``), with
its share of a GPU, or a clear error before anything waits forever.

    # on each organization's node
    ray start --address HEAD:6379 --resources '{"silo:cleveland": 1}'
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from orchestrator.errors import FederationError
from pipelines.spec import Pipeline

logger = logging.getLogger(__name__)


class PlacementError(FederationError):
    """A silo that cannot be placed on any node of the cluster."""


@dataclass(frozen=True)
class SiloPlacement:
    num_cpus: float
    num_gpus: float
    resources: dict[str, float] = field(default_factory=dict)

    def demand(self) -> str:
        parts = {"CPU": self.num_cpus, "GPU": self.num_gpus, **self.resources}
        return ", ".join(f"{k}: {v:g}" for k, v in parts.items() if v)


def node_resource(silo: str) -> str:
    return f"silo:{silo}"


def fair_gpu_share(total_gpus: float, silos: int) -> float:
    """1 when there is a GPU per silo, else the largest 1/k that gives every silo a share."""
    if total_gpus < 1 or silos < 1:
        return 0.0
    if total_gpus >= silos:
        return 1.0
    return 1.0 / math.ceil(silos / math.floor(total_gpus))


def plan(spec: Pipeline, cluster: dict[str, float]) -> dict[str, SiloPlacement]:
    """Each silo's actor resources, from the pipeline and what the cluster offers."""
    resources = spec.resources
    names = [s.name for s in spec.silos if not spec.is_remote(s)]  # a remote site places its own
    if resources.gpus_per_silo == "auto":
        gpus = fair_gpu_share(cluster.get("GPU", 0.0), len(names))
    else:
        gpus, available = float(resources.gpus_per_silo), cluster.get("GPU", 0.0)
        if gpus > 0 and available < gpus:
            raise PlacementError(
                f"[resources] gpus_per_silo = {gpus:g} but the cluster has {available:g} GPU(s); "
                "set gpus_per_silo = 0 or 'auto'"
            )
    offered = {n for n in names if cluster.get(node_resource(n), 0) >= 1}
    if resources.placement == "pinned" and (missing := [n for n in names if n not in offered]):
        commands = "\n  ".join(
            f"ray start --address HEAD:6379 --resources '{{\"{node_resource(n)}\": 1}}'" for n in missing
        )
        raise PlacementError(
            f"[resources] placement = 'pinned' but no node offers {[node_resource(n) for n in missing]}; "
            f"start each of those silos' nodes with:\n  {commands}"
        )
    pinned = offered if resources.placement != "anywhere" else set()
    if pinned and len(pinned) < len(names):
        logger.warning("silos %s have no node of their own and may run anywhere", sorted(set(names) - pinned))
    return {
        n: SiloPlacement(resources.cpus_per_silo, gpus, {node_resource(n): 1.0} if n in pinned else {})
        for n in names
    }

"""A federation on a multi-node Ray cluster on one machine (ray.cluster_utils.Cluster): a head
and one node per organization offering "silo:<name>". Run by tests/pipelines/test_multinode.py
in its own process (a process holds one Ray connection):

    python -m tests.pipelines.cluster_federation PIPELINE OUT.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from pipelines.runner import RunOptions, run_federation
from pipelines.spec import load_pipeline

SMALL_STORE = 100 * 1024 * 1024  # bytes of object store per node: five nodes share this machine


def main(pipeline: Path, out: Path) -> None:
    loaded = load_pipeline(pipeline)
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "object_store_memory": SMALL_STORE, "include_dashboard": False},
    )
    nodes = {}
    for silo in loaded.spec.silos:
        node = cluster.add_node(
            num_cpus=1, object_store_memory=SMALL_STORE, resources={f"silo:{silo.name}": 1}
        )
        nodes[silo.name] = node.node_id
    try:
        ray.init(address=cluster.address, namespace=loaded.spec.name, log_to_driver=False)
        summary = run_federation(loaded, RunOptions())
        out.write_text(json.dumps({"nodes": nodes, "summary": summary.to_dict()}))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))

"""Placement: each silo on its organization's node, a fair GPU share, clear errors otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.placement import PlacementError, fair_gpu_share, plan
from pipelines.spec import parse_pipeline
from tests.conftest import example_pipeline_text


def _spec(**resources: str):
    text = example_pipeline_text()
    if resources:
        text += "\n[resources]\n" + "\n".join(f"{k} = {v}" for k, v in resources.items()) + "\n"
    return parse_pipeline(text, Path("/p/pipeline.toml")).spec


@pytest.mark.parametrize(
    ("gpus", "silos", "share"),
    [(0, 4, 0.0), (1, 4, 0.25), (2, 4, 0.5), (2, 3, 0.5), (4, 4, 1.0), (8, 4, 1.0)],
)
def test_fair_gpu_share(gpus: float, silos: int, share: float) -> None:
    assert fair_gpu_share(gpus, silos) == share


def test_auto_pins_the_silos_whose_node_exists() -> None:
    placements = plan(_spec(), {"CPU": 8, "silo:cleveland": 1, "silo:hungary": 1})
    assert placements["cleveland"].resources == {"silo:cleveland": 1.0}
    assert placements["switzerland"].resources == {}
    assert placements["cleveland"].num_gpus == 0.0


def test_pinned_requires_every_node_and_says_how_to_start_it() -> None:
    with pytest.raises(PlacementError) as caught:
        plan(_spec(placement='"pinned"'), {"CPU": 8, "silo:cleveland": 1})
    message = str(caught.value)
    assert "no node offers ['silo:hungary', 'silo:switzerland', 'silo:long-beach']" in message
    assert """ray start --address HEAD:6379 --resources '{"silo:hungary": 1}'""" in message


def test_anywhere_never_pins() -> None:
    placements = plan(_spec(placement='"anywhere"'), {"CPU": 8, "silo:cleveland": 1})
    assert all(p.resources == {} for p in placements.values())


def test_gpus_auto_shares_one_gpu_among_four_silos() -> None:
    assert {p.num_gpus for p in plan(_spec(), {"CPU": 8, "GPU": 1}).values()} == {0.25}


def test_asking_for_gpus_the_cluster_lacks_is_refused() -> None:
    with pytest.raises(PlacementError, match="gpus_per_silo = 1 but the cluster has 0 GPU"):
        plan(_spec(gpus_per_silo="1"), {"CPU": 8})

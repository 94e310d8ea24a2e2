"""Models are built identically in every silo and flatten to one vector."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from silo.config import ModelSpec
from silo.models import ModelError, build_model, count_parameters, get_flat, set_flat


def tiny_factory(n_inputs: int, n_outputs: int) -> nn.Module:
    return nn.Sequential(nn.Linear(n_inputs, 3), nn.Tanh(), nn.Linear(3, n_outputs))


def not_a_module(n_inputs: int, n_outputs: int) -> str:
    return "nope"


def test_same_seed_same_weights() -> None:
    a = build_model(ModelSpec("mlp", (8,)), 5, 1, seed=7)
    b = build_model(ModelSpec("mlp", (8,)), 5, 1, seed=7)
    np.testing.assert_array_equal(get_flat(a), get_flat(b))
    assert count_parameters(a) == 5 * 8 + 8 + 8 + 1


def test_flat_round_trip() -> None:
    model = build_model(ModelSpec("logistic"), 4, 3, seed=0)
    values = np.arange(count_parameters(model), dtype=np.float64)
    set_flat(model, values)
    np.testing.assert_array_equal(get_flat(model), values)


def test_wrong_length_is_refused() -> None:
    model = build_model(ModelSpec("logistic"), 4, 1, seed=0)
    with pytest.raises(ModelError, match="has 3 values, the model has 5"):
        set_flat(model, np.zeros(3))


def test_custom_factory() -> None:
    model = build_model(ModelSpec("tests.silo.test_models:tiny_factory"), 4, 2, seed=0)
    assert count_parameters(model) == 4 * 3 + 3 + 3 * 2 + 2


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("resnet", "use logistic, mlp"),
        ("tests.silo.nowhere:build", "cannot import it"),
        ("tests.silo.test_models:not_a_module", "returned str, not nn.Module"),
    ],
)
def test_bad_kinds(kind: str, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        build_model(ModelSpec(kind), 4, 1, seed=0)

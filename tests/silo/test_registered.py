"""Warm start: registered weights carried onto this run's preprocessing, or refused clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from silo.config import ModelSpec
from silo.inference import predict_frame
from silo.models import build_model, get_flat, set_flat
from silo.preprocess import Preprocessor
from silo.registered import RegisteredModel, RegisteredModelError, warm_start_weights
from tests.conftest import synthetic_silo

URI = "models:/m@champion"


def _pre(means: tuple[float, float], stds: tuple[float, float], levels: tuple[str, ...]) -> Preprocessor:
    return Preprocessor(
        target="y", inputs=("x1", "x2", "color"), numeric=("x1", "x2"), means=means, stds=stds,
        categorical=("color",), levels=(levels,), modes=(levels[0],), classes=("0", "1"), positive=None,
    )  # fmt: skip


OLD = _pre((50.0, 0.0), (10.0, 1.0), ("blue", "green", "red"))
NEW = _pre((53.0, 0.4), (12.5, 0.8), ("blue", "green", "red"))  # this run's federated statistics


def _registered(kind: str, pre: Preprocessor) -> tuple[RegisteredModel, torch.nn.Module]:
    model = build_model(ModelSpec(kind=kind, hidden=(4,)), len(pre.output_names), 1, seed=7)
    return RegisteredModel(URI, get_flat(model), pre, program=None), model


@pytest.mark.parametrize("kind", ["logistic", "mlp"])
def test_warm_started_model_predicts_what_the_registered_one_did(kind: str) -> None:
    # Prepare: a registered model under old statistics, a fresh model of this run
    registered, old_model = _registered(kind, OLD)
    fresh = build_model(ModelSpec(kind=kind, hidden=(4,)), len(NEW.output_names), 1, seed=0)
    frame = synthetic_silo(40, seed=3).drop(columns=["y"])
    # Execute
    flat, note = warm_start_weights(registered, fresh, NEW)
    set_flat(fresh, flat)
    # Assert: same probabilities on raw rows, although the standardization changed
    before = predict_frame(old_model, OLD, frame)["probability"].to_numpy()
    after = predict_frame(fresh, NEW, frame)["probability"].to_numpy()
    np.testing.assert_allclose(after, before, atol=1e-5)
    assert "rebased" in note
    without = predict_frame(old_model, NEW, frame)["probability"].to_numpy()
    assert np.abs(without - before).max() > 1e-2  # the rebasing is what makes them equal


def test_a_different_parameter_count_is_refused_with_both_counts() -> None:
    registered, _ = _registered("logistic", OLD)
    wider = _pre(NEW.means, NEW.stds, ("blue", "green", "red", "white"))
    fresh = build_model(ModelSpec(kind="logistic"), len(wider.output_names), 1, seed=0)
    with pytest.raises(
        RegisteredModelError, match=r"models:/m@champion has 6 parameters, this pipeline's model has 7"
    ):
        warm_start_weights(registered, fresh, wider)


def test_other_inputs_with_the_same_count_are_refused_naming_them() -> None:
    registered, _ = _registered("logistic", OLD)
    renamed = _pre(NEW.means, NEW.stds, ("blue", "green", "yellow"))
    fresh = build_model(ModelSpec(kind="logistic"), len(renamed.output_names), 1, seed=0)
    with pytest.raises(RegisteredModelError, match=r"adds \['color=yellow'\] and lacks \['color=red'\]"):
        warm_start_weights(registered, fresh, renamed)

"""Server optimizer steps against a hand computation; SCAFFOLD's control variates and correction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from silo.messages import FitConfig
from silo.server_opt import OptState, ServerOpt, scaffold_control, server_step, split_scaffold
from silo.task_kinds import binary_loss
from silo.train import local_steps, local_train
from silo.update import Control, distance, staged_update

W = np.array([1.0, -2.0])
AVG = np.array([1.5, -2.5])  # delta = [0.5, -0.5]
STATE = OptState(m=np.array([0.1, 0.2]), v=np.array([0.04, 0.5]))


def test_fedadam_step_by_hand() -> None:
    opt = ServerOpt("fedadam", eta=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    weights, state = server_step(opt, W, AVG, STATE)
    m = [0.9 * 0.1 + 0.1 * 0.5, 0.9 * 0.2 + 0.1 * -0.5]  # [0.14, 0.13]
    v = [0.99 * 0.04 + 0.01 * 0.25, 0.99 * 0.5 + 0.01 * 0.25]  # [0.0421, 0.4975]
    assert state.m == pytest.approx(m) and state.v == pytest.approx(v)
    assert weights == pytest.approx(
        [1.0 + 0.1 * m[0] / (v[0] ** 0.5 + 1e-3), -2.0 + 0.1 * m[1] / (v[1] ** 0.5 + 1e-3)]
    )


def test_fedyogi_step_by_hand() -> None:
    opt = ServerOpt("fedyogi", eta=0.01, beta1=0.9, beta2=0.99, tau=1e-3)
    weights, state = server_step(opt, W, AVG, STATE)
    # v - (1 - b2) d^2 sign(v - d^2): 0.04 < 0.25 -> grows; 0.5 > 0.25 -> shrinks
    v = [0.04 + 0.01 * 0.25, 0.5 - 0.01 * 0.25]
    assert state.v == pytest.approx(v)
    assert weights[0] == pytest.approx(1.0 + 0.01 * 0.14 / (v[0] ** 0.5 + 1e-3))


def test_fedadagrad_step_by_hand_and_from_no_state() -> None:
    opt = ServerOpt("fedadagrad", eta=0.1, tau=1e-9)
    weights, state = server_step(opt, W, AVG, None)
    assert state.m == pytest.approx([0.5, -0.5]) and state.v == pytest.approx([0.25, 0.25])
    assert weights == pytest.approx([1.1, -2.1])  # eta * d / |d|
    _, again = server_step(opt, weights, weights + np.array([0.5, 0.0]), state)
    assert again.v == pytest.approx([0.5, 0.25])


def test_negative_v_from_encoding_noise_is_treated_as_zero() -> None:
    weights, state = server_step(ServerOpt("fedadam"), W, W, OptState(np.zeros(2), np.array([-1e-12, 0.0])))
    assert np.all(np.isfinite(weights)) and np.all(state.v >= 0)


def test_unknown_server_optimizer_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown server optimizer"):
        ServerOpt("fedsgd")


def test_scaffold_control_option_two_and_payload_split() -> None:
    c, ci = np.array([0.1, 0.0]), np.array([0.0, 0.2])
    start, end = np.array([1.0, 1.0]), np.array([0.8, 1.1])
    new = scaffold_control(c, ci, start, end, steps=4, lr=0.05)
    assert new == pytest.approx(ci - c + (start - end) / 0.2)  # [0.9, -0.3]
    assert split_scaffold(np.arange(4.0), 2)[1].tolist() == [2.0, 3.0]
    assert split_scaffold(np.arange(2.0), 2)[1].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="expected 4"):
        split_scaffold(np.arange(3.0), 2)


def test_staged_update_clips_the_delta_and_carries_c_plus_delta_c() -> None:
    config = FitConfig(local_epochs=1, batch_size=8, lr=0.1, clip_norm=1.0)
    start = np.array([1.0, 1.0])
    plain = staged_update(start, np.array([4.0, 5.0]), config, 1, None)
    assert plain.norm == pytest.approx(5.0) and plain.vector == pytest.approx([1.6, 1.8])
    control = Control(np.array([0.5, 0.5]), np.zeros(2))
    scaffold = staged_update(start, np.array([1.3, 1.4]), config, 2, control)
    c_new = -control.c_global + (start - np.array([1.3, 1.4])) / 0.2
    assert scaffold.c_local == pytest.approx(c_new)
    assert scaffold.vector == pytest.approx([1.3, 1.4, *(control.c_global + c_new)])


def test_an_unclipped_update_is_staged_without_a_copy_and_its_norm_taken_in_blocks() -> None:
    # Prepare: a float32 model's start and end, clipping off and on but not reached
    rng = np.random.default_rng(0)
    start = rng.normal(size=10_001).astype(np.float32)
    end = (start + rng.normal(0, 0.01, size=start.size)).astype(np.float32)
    for clip in (0.0, 100.0):
        # Execute
        staged = staged_update(start, end, FitConfig(1, 8, 0.1, clip_norm=clip), 1, None)
        # Assert
        assert staged.vector is end
        assert staged.norm == pytest.approx(np.linalg.norm(end.astype(np.float64) - start), rel=1e-12)
    assert distance(start, end, block=7) == pytest.approx(staged.norm, rel=1e-12)
    with pytest.raises(ValueError, match="not finite"):
        staged_update(start, np.full_like(end, np.nan), FitConfig(1, 8, 0.1), 1, None)


def test_scaffold_correction_shifts_each_sgd_step_by_lr_times_c_minus_ci() -> None:
    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    config = FitConfig(local_epochs=1, batch_size=8, lr=0.1)
    results = []
    for correction in (None, np.full(4, 0.5)):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        data = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
        local_train(model, data, binary_loss, config, torch.device("cpu"), 1, correction=correction)
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]).numpy())
    assert local_steps(8, config) == 1
    assert results[1] - results[0] == pytest.approx(np.full(4, -0.05), abs=1e-6)

"""The one local loop: torch's functional SGD (exactly torch.optim.SGD), any dataset, local steps,
per-sample or batch-coupled losses."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from silo.messages import FitConfig
from silo.task_kinds import binary_loss
from silo.train import FunctionalSGD, local_train, planned_steps


def _train(optimizer_for, steps: int = 5) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    optimizer = optimizer_for(list(model.parameters()))
    data = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    for step in range(steps):
        optimizer.zero_grad()
        loss = model(data[step % 2 :: 2]).pow(2).mean()
        loss.backward()
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_functional_sgd_matches_torch_optim_sgd_exactly(momentum: float) -> None:
    ours = _train(lambda params: FunctionalSGD(params, lr=0.1, momentum=momentum))
    torchs = _train(lambda params: torch.optim.SGD(params, lr=0.1, momentum=momentum))

    assert all(torch.equal(a, b) for a, b in zip(ours, torchs, strict=True))


def test_functional_sgd_leaves_torch_dynamo_unimported() -> None:
    code = (
        "import sys, torch\n"
        "from silo.train import FunctionalSGD\n"
        "m = torch.nn.Linear(3, 1); o = FunctionalSGD(m.parameters(), lr=0.1, momentum=0.9)\n"
        "m(torch.ones(2, 3)).sum().backward(); o.step()\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


class _Pairs(Dataset):
    """Not a TensorDataset: items go through the DataLoader's collation."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def _fit(data: Dataset, config: FitConfig, loss=binary_loss) -> tuple[float, torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    loss_value = local_train(model, data, loss, config, torch.device("cpu"), round_seed=5)
    return loss_value, torch.cat([p.detach().flatten() for p in model.parameters()])


X = torch.randn(37, 3, generator=torch.Generator().manual_seed(2))
Y = (X[:, :1] > 0).float()


def test_any_dataset_trains_exactly_like_the_same_rows_as_a_table() -> None:
    config = FitConfig(local_epochs=2, batch_size=8, lr=0.1)
    table, items = _fit(TensorDataset(X, Y), config), _fit(_Pairs(X, Y), config)
    assert table[0] == pytest.approx(items[0]) and torch.equal(table[1], items[1])


def test_local_steps_counts_batches_across_epochs() -> None:
    steps = FitConfig(local_epochs=1, batch_size=8, lr=0.1, local_steps=7)  # 5 batches per epoch
    assert planned_steps(37, steps) == 7 and planned_steps(37, FitConfig(2, 8, 0.1)) == 10
    seen = []
    _fit(TensorDataset(X, Y), steps, lambda out, y: seen.append(len(y)) or binary_loss(out, y))
    assert seen == [8, 8, 8, 8, 5, 8, 8]


def test_a_scalar_loss_couples_the_batch_and_a_wrong_shape_is_named() -> None:
    def cox_like(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (outputs[:, 0] - target[:, 0]).pow(2).sum() / len(target)

    loss, _ = _fit(TensorDataset(X, Y), FitConfig(1, 8, 0.1), cox_like)
    assert np.isfinite(loss)
    with pytest.raises(ValueError, match=r"loss returned \(8, 2\) for a batch of 8"):
        _fit(TensorDataset(X, Y), FitConfig(1, 8, 0.1), lambda out, y: torch.cat([out, out], dim=1))


def test_items_that_are_not_pairs_are_refused() -> None:
    class Triples(_Pairs):
        def __getitem__(self, i: int):  # type: ignore[override]
            return self.x[i], self.y[i], i

    with pytest.raises(TypeError, match=r"dataset items must be \(inputs, target\) pairs, got a list of 3"):
        _fit(Triples(X, Y), FitConfig(1, 8, 0.1))

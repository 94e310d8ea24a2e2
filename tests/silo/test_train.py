"""Local training's SGD: torch's functional update, exactly what torch.optim.SGD computes."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from silo.train import FunctionalSGD


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

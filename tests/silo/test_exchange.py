"""What crosses the wire: trainable parameters and float buffers in order; frozen parts hashed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from silo.exchange import Exchange, ManifestMismatch, check_manifests


def _net(frozen_seed: int | None = None) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 4 * 4, 1))
    if frozen_seed is not None:  # a "pretrained" first layer, frozen
        torch.manual_seed(frozen_seed)
        nn.init.normal_(net[0].weight)
        net[0].requires_grad_(False)
    return net


def test_trainable_parameters_then_float_buffers_integer_buffers_never() -> None:
    names = [t.name for t in Exchange.of(_net()).manifest.tensors]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias",
                     "1.running_mean", "1.running_var"]  # fmt: skip
    local = [t.name for t in Exchange.of(_net(), buffers="local").manifest.tensors]
    assert local == names[:6]  # num_batches_tracked (int64) is never exchanged


def test_frozen_parameters_stay_and_are_hashed() -> None:
    exchange = Exchange.of(_net(frozen_seed=1))
    manifest = exchange.manifest
    assert [t.name for t in manifest.tensors][:2] == ["1.weight", "1.bias"]
    assert manifest.frozen_parameters == 4 * 9 + 4 and len(manifest.frozen_sha256) == 64
    assert manifest.size == exchange.size == exchange.get().size == 4 + 4 + 64 + 1 + 4 + 4


def test_get_and_set_round_trip_in_manifest_order() -> None:
    a, b = Exchange.of(_net()), Exchange.of(_net())
    values = np.arange(a.size, dtype=np.float64) / 7
    a.set(values)
    assert np.allclose(a.get(), values, atol=1e-6) and not np.allclose(b.get(), values)
    with pytest.raises(ValueError, match="the model exchanges"):
        a.set(values[:-1])


def test_a_float32_model_is_kept_exactly_at_its_own_size() -> None:
    # Prepare: a float32 model, and one with a float64 tensor
    exchange = Exchange.of(_net())
    wide = Exchange.of(_net().double())
    # Execute
    own = exchange.snapshot()
    # Assert: half of float64's bytes, the same values; a float64 model stays float64
    assert exchange.dtype == own.dtype == np.float32 and own.nbytes * 2 == exchange.get().nbytes
    assert np.array_equal(own.astype(np.float64), exchange.get())
    assert wide.dtype == np.float64 and wide.get(wide.dtype).dtype == np.float64
    exchange.set(own)  # a float32 vector loads as any other
    assert np.array_equal(exchange.snapshot(), own)


def test_silos_whose_tensors_or_frozen_base_differ_are_named() -> None:
    same = Exchange.of(_net(frozen_seed=1)).manifest
    check_manifests({"a": same, "b": same})
    wider = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(64, 2))
    with pytest.raises(ManifestMismatch, match=r"silo 'c': tensor '3.weight' is \[2, 64\] float32, "
                       r"silo 'a' has \[1, 64\] float32"):  # fmt: skip
        check_manifests({"a": Exchange.of(_net()).manifest, "b": Exchange.of(_net()).manifest,
                         "c": Exchange.of(wider).manifest})  # fmt: skip
    other_base = Exchange.of(_net(frozen_seed=2)).manifest
    with pytest.raises(ManifestMismatch, match=r"silo 'odd': its frozen parameters .* differ from silo 'a'"):
        check_manifests({"a": same, "b": same, "odd": other_base})

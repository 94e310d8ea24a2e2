"""The silo's protocol, driven in-process (the same class Ray runs as an actor)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from orchestrator.schema import agree
from privacy.aggregate import WeightedSum
from privacy.codec import Codec, PlainCodec
from privacy.params import HEConfig
from privacy.schemes import public_codec
from privacy.sealing import SealError
from privacy.signing import verify_update
from silo.actor import SiloWorker
from silo.config import DataSpec, ModelSpec, SiloSpec
from silo.data import DataError
from silo.messages import FitConfig, FitIns
from tests.conftest import synthetic_silo

BINARY = DataSpec(target="y", categorical=("color",))
CONFIG = FitConfig(local_epochs=2, batch_size=16, lr=0.1)


def _three_classes(rows: int, seed: int) -> pd.DataFrame:
    frame = synthetic_silo(rows, seed)
    frame["y"] = np.select([frame["x2"] < -0.4, frame["x2"] > 0.4], ["low", "high"], "mid")
    return frame


def _sum(codec: Codec, silos: list[SiloWorker], hints: list[float], phase: str) -> WeightedSum:
    """What the orchestrator does: agree the largest range, add the signed encodings."""
    running = WeightedSum(codec)
    bound = max(hints)
    for s in silos:
        update = s.encode_staged(f"{phase}/{s.name}", bound)
        running.add(verify_update(update, s.name, f"{phase}/{s.name}", s.public_keys().signing))
    return running


def _ready(paths: list[Path], data: DataSpec, he: str = "off", model: str = "logistic") -> list[SiloWorker]:
    """describe -> keys -> two statistics passes -> finish, with the orchestrator's part done here."""
    config = HEConfig(scheme=he)
    silos = [
        SiloWorker(SiloSpec(f"s{i}", str(p), data, ModelSpec(model), he=config)) for i, p in enumerate(paths)
    ]
    schema = agree([s.describe() for s in silos])
    codec: Codec = PlainCodec()
    if he != "off":
        bundle = silos[0].generate_he_keys({s.name: s.public_keys().sealing for s in silos})
        for s in silos[1:]:
            assert s.install_he_keys(bundle.sealed[s.name]) == bundle.key_id
        codec = public_codec(config, bundle.public_context, bundle.key_id)
    sums = _sum(codec, silos, [s.stats_sums(schema) for s in silos], "stats-1").total()
    squares = _sum(codec, silos, [s.stats_squares(sums) for s in silos], "stats-2").total()
    for s in silos:
        s.finish_preprocessing(squares)
    return silos


def _round(silos: list[SiloWorker], r: int, payload=None, codec: Codec | None = None):
    results = [s.fit(FitIns(r, payload, CONFIG)) for s in silos]
    for res in results:
        assert not res.has_error(), res.error
    running = _sum(codec or PlainCodec(), silos, [res.bound_hint for res in results], f"round-{r}")
    return results, running.mean()


def test_binary_silos_learn_together(write_table) -> None:
    paths = [write_table(f"b{i}", synthetic_silo(n, seed=i)) for i, n in enumerate([120, 80])]
    silos = _ready(paths, BINARY)
    payload = None
    for r in range(1, 6):
        results, payload = _round(silos, r, payload)
    final = [s.evaluate(payload) for s in silos]
    assert sum(e.correct for e in final) / sum(e.examples for e in final) > 0.8
    assert all(e.positive_hist is not None for e in final)
    assert results[0].examples == len(silos[0]._train_set) and results[0].bound_hint > 0


def test_three_classes(write_table) -> None:
    paths = [write_table(f"m{i}", _three_classes(n, seed=i)) for i, n in enumerate([150, 100])]
    silos = _ready(paths, DataSpec(target="y", categorical=("color",)), model="mlp")
    assert silos[0]._pre is not None and silos[0]._pre.classes == ("high", "low", "mid")
    payload = None
    for r in range(1, 8):
        _, payload = _round(silos, r, payload)
    evaluations = [s.evaluate(payload) for s in silos]
    assert evaluations[0].positive_hist is None
    assert sum(e.correct for e in evaluations) / sum(e.examples for e in evaluations) > 0.6


@pytest.mark.parametrize("he", ["packed", "ckks"])
def test_every_silo_builds_the_same_preprocessing_under_he(write_table, he: str) -> None:
    paths = [write_table(f"c{i}", synthetic_silo(n, seed=i)) for i, n in enumerate([60, 40, 30])]
    silos = _ready(paths, BINARY, he=he)
    first = silos[0]._pre
    assert all(s._pre == first for s in silos[1:])
    pooled = pd.concat([s._train_frame for s in silos])  # test-only: what pooling would give
    np.testing.assert_allclose(first.means, pooled[["x1", "x2"]].mean(), rtol=1e-6)


def test_a_sealed_key_for_another_silo_does_not_install(write_table) -> None:
    paths = [write_table(f"k{i}", synthetic_silo(30, seed=i)) for i in range(3)]
    a, b, c = (SiloWorker(SiloSpec(f"s{i}", str(p), BINARY, ModelSpec())) for i, p in enumerate(paths))
    bundle = a.generate_he_keys({s.name: s.public_keys().sealing for s in (a, b, c)})
    with pytest.raises(SealError):
        b.install_he_keys(bundle.sealed["s2"])
    assert c.install_he_keys(bundle.sealed["s2"]) == bundle.key_id
    encoded = a._require_codec().encode([1.5], bound=2.0, tag="x")
    assert c._require_codec().decode(encoded)[0] == pytest.approx(1.5, abs=1e-4)


def test_a_non_finite_update_is_refused_by_the_silo(write_table) -> None:
    silos = _ready([write_table("n", synthetic_silo(60, seed=3))], BINARY)
    res = silos[0].fit(FitIns(1, None, FitConfig(local_epochs=1, batch_size=8, lr=float("inf"))))
    assert res.has_error() and res.bound_hint == 0.0
    with pytest.raises(RuntimeError, match="nothing staged"):
        silos[0].encode_staged("round-1/s0", 1.0)
    assert res.error == "local update has NaN or infinite weights (learning rate too high?)"


def test_the_key_bundle_for_the_orchestrator_holds_no_secret(write_table) -> None:
    """Everything the orchestrator receives during key set-up, byte for byte, lacks the secret."""
    import pickle

    paths = [write_table(f"q{i}", synthetic_silo(30, seed=i)) for i in range(2)]
    a, b = (SiloWorker(SiloSpec(f"s{i}", str(p), BINARY, ModelSpec())) for i, p in enumerate(paths))
    keys_seen = pickle.dumps([a.public_keys(), b.public_keys()])
    bundle = a.generate_he_keys({s.name: s.public_keys().sealing for s in (a, b)})
    assert a._keys is not None
    secret = a._keys.secret_bytes()
    for blob in (keys_seen, pickle.dumps(bundle)):
        assert secret not in blob and secret[100:164] not in blob


def test_a_single_class_silo_and_tiny_silos_train_and_report_what_their_rows_define(write_table) -> None:
    from orchestrator.metrics import combine

    positive = synthetic_silo(200, seed=7)
    positive = positive[positive["y"] == 1].head(40)  # a referral centre: every patient has the disease
    tiny = synthetic_silo(6, seed=8)  # fewer rows than batch_size (16)
    two = synthetic_silo(40, seed=9).sort_values("y").iloc[[0, -1]]  # one row per class: none validates
    frames = [synthetic_silo(120, seed=6), positive, tiny, two]
    silos = _ready([write_table(f"k{i}", f) for i, f in enumerate(frames)], BINARY)
    assert silos[1].describe().warnings and silos[1].describe().classes == ("1",)
    assert [len(s._val_set) for s in silos[1:]] == [8, 2, 0] and len(silos[3]._train_set) == 2

    payload = None
    for r in range(1, 4):
        results, payload = _round(silos, r, payload)
        assert all(np.isfinite(res.train_loss) for res in results)
    result = combine(3, [s.evaluate(payload) for s in silos])

    ones = result.per_silo["s1"]
    assert ones.undefined == {"auc": "a single class in its validation rows"}
    assert 0 <= ones.accuracy <= 1 and np.isfinite(ones.loss) and np.isnan(ones.metrics["auc"])
    assert result.per_silo["s2"].examples == 2 and np.isfinite(result.per_silo["s2"].accuracy)
    assert set(result.per_silo["s3"].undefined) == {"loss", "accuracy", "auc"}
    assert (
        result.examples == sum(len(s._val_set) for s in silos)
        and result.auc is not None
        and np.isfinite(result.loss)
    )


def test_a_silo_with_no_row_left_after_dropping_gaps_says_so(write_table) -> None:
    gaps = synthetic_silo(10, seed=10)
    gaps.loc[:, "x1"] = np.nan
    data = DataSpec(target="y", categorical=("color",), missing="drop")
    silos = [SiloWorker(SiloSpec(f"d{i}", str(write_table(f"d{i}", f)), data, ModelSpec()))
             for i, f in enumerate([synthetic_silo(30, seed=11), gaps])]  # fmt: skip
    schema = agree([s.describe() for s in silos])
    silos[0].stats_sums(schema)
    with pytest.raises(DataError, match=r"silo 'd1': only 0 rows .* missing = 'drop' dropped 10"):
        silos[1].stats_sums(schema)

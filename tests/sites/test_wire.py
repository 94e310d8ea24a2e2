"""The coordinator <-> site wire format (sites/wire.py): values of the schema round-trip with their
types, the silo's real messages cross, every dataclass on SiloWorker's interface is whitelisted,
and everything else is refused with a WireError, on either side, without unpickling."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import pickle
import typing
from collections import OrderedDict
from typing import Any

import msgpack
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from privacy import shamir
from privacy.aggregate import WeightedPayload, encode_weighted
from privacy.codec import Payload, PlainCodec
from privacy.dp import DPConfig
from privacy.params import CKKSParams, HEConfig
from privacy.sealing import SealingKey
from privacy.secagg import MaskDeal, MaskingSession, MaskRound, OrchestratorKey, UnmaskShares, unmask_masks
from privacy.signing import SignedUpdate, UpdateSigner, verify_update
from silo.actor import SiloWorker
from silo.config import DataSpec, ModelSpec, SiloSpec
from silo.data import SiloDescription
from silo.exchange import Manifest, TensorSpec
from silo.messages import (
    Evaluation,
    FitConfig,
    FitIns,
    FitRes,
    KeyBundle,
    PublishRequest,
    ServerStepIns,
    SiloReady,
    SiloStatus,
    StoredPayload,
)
from silo.preprocess import AgreedSchema
from silo.server_opt import OptState, ServerOpt
from silo.task import TaskSpec
from sites.terms import Refusal, RunTerms
from sites.wire import _DATACLASS, MAX_MESSAGE_BYTES, NAMES, WHITELIST, WireError, dumps, loads

DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"] + [
    "float16",
    "float32",
    "float64",
]


def wire_trip(value: Any) -> Any:
    return loads(dumps(value))


def assert_same(got: Any, want: Any) -> None:
    """Equal, and of the same types all the way down (1 is not 1.0, a tuple is not a list)."""
    assert type(got) is type(want), (got, want)
    if isinstance(want, np.ndarray):
        assert got.dtype == want.dtype.newbyteorder("=") and got.shape == want.shape
        assert np.array_equal(got, want, equal_nan=want.dtype.kind == "f")
    elif dataclasses.is_dataclass(want):
        for f in dataclasses.fields(want):
            assert_same(getattr(got, f.name), getattr(want, f.name))
    elif isinstance(want, list | tuple):
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert_same(g, w)
    elif isinstance(want, dict):
        assert list(got) == list(want)
        for key in want:
            assert_same(got[key], want[key])
    elif isinstance(want, float) and math.isnan(want):
        assert math.isnan(got)
    else:
        assert got == want


def payload(values: list[float], tag: str = "r1/a") -> Payload:
    return PlainCodec().encode(np.asarray(values), tag=tag)


# ---- the schema's values round-trip


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.integers(min_value=-(2**600), max_value=2**600)  # Shamir shares are 521-bit
    | st.floats()
    | st.text()
    | st.binary()
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.lists(inner, max_size=5).map(tuple)
        | st.dictionaries(st.text(max_size=8) | st.integers(-(2**63), 2**63 - 1), inner, max_size=5)
    ),
    max_leaves=30,
)


@given(value=values)
def test_nested_values_round_trip_with_their_types(value: Any) -> None:
    # Act
    got = wire_trip(value)
    # Assert
    assert_same(got, value)


@settings(deadline=None)
@given(
    array=st.sampled_from(DTYPES + [">i4", ">f8", ">u2"]).flatmap(
        lambda dtype: arrays(np.dtype(dtype), array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
    )
)
def test_arrays_keep_dtype_shape_and_values_in_any_layout(array: np.ndarray) -> None:
    # Prepare: the array itself, transposed and reversed (not C-contiguous), and inside a message
    views = [array, array.T, array[::-1] if array.ndim else array]
    for view in views:
        # Act
        got = wire_trip({"sums": view})["sums"]
        # Assert
        assert_same(got, view)
        assert got.flags.writeable and got.flags.c_contiguous


def test_arrays_travel_little_endian_whatever_their_byte_order() -> None:
    # Prepare
    big, little = np.array([1, 2], dtype=">u4"), np.array([1, 2], dtype="<u4")
    # Act
    data = dumps(big)
    # Assert
    assert data == dumps(little)
    assert b"\x01\x00\x00\x00\x02\x00\x00\x00" in data


@pytest.mark.parametrize("dtype", DTYPES)
def test_numpy_scalars_come_back_as_the_same_numpy_type(dtype: str) -> None:
    # Prepare
    scalar = np.ones(1, dtype=dtype)[0]
    # Act
    got = wire_trip([scalar, (scalar,)])
    # Assert
    assert_same(got, [scalar, (scalar,)])


def test_byte_buffers_arrive_as_bytes_and_dict_subclasses_as_dicts() -> None:
    # Prepare
    value = [bytearray(b"ab"), memoryview(b"cd"), OrderedDict(x=1)]
    # Act
    got = wire_trip(value)
    # Assert
    assert_same(got, [b"ab", b"cd", {"x": 1}])


def test_nan_and_infinities_cross() -> None:
    # Act
    got = wire_trip((float("nan"), float("inf"), -float("inf"), np.float32("nan")))
    # Assert
    assert math.isnan(got[0]) and got[1:3] == (float("inf"), -float("inf"))
    assert type(got[3]) is np.float32 and np.isnan(got[3])


def test_the_format_is_pinned() -> None:
    # Prepare: a change here breaks sites running the previous version
    status = SiloStatus("a", "i", True)
    # Act
    data = dumps(status)
    # Assert
    inner = msgpack.packb(["silo.messages.SiloStatus", {"silo": "a", "incarnation": "i", "ready": True}])
    assert data == b"\xc7" + bytes([len(inner), 4]) + inner  # ext 8, its length, code 4: a dataclass
    assert dumps(status) == data  # the same value always packs the same bytes


# ---- the silo's real messages cross


def real_messages() -> list[Any]:
    config = FitConfig(local_epochs=2, batch_size=32, lr=0.05, optimizer="adam", local_steps=None)
    task = TaskSpec("pkg.task", b"def dataset(ctx, split): ...", "classification", {"lr": 0.1, "layers": [8]})
    return [
        FitIns(3, payload([1.0, -2.5, 3.25]), config),
        FitIns(1, None, FitConfig(1, 8, 0.1, scaffold=True, weighting="uniform")),
        SiloReady("a", 80, 20, 1, 13, 14, "cpu", node="n1", data_sha256="ab" * 32, warm_start="models:/m/1"),
        SiloStatus("a", "incarnation-1", ready=False),
        RunTerms(
            "run-1", "heart", "00" * 32, "tabular", "logistic", "packed", True, "record", 3.0, 1e-5, 2, 5, 3
        ),
        RunTerms("run-2", "heart", "11" * 32, "ff" * 32, "mlp", "off", False, "off", None, None, 1, 1, 2),
        Refusal("site-a", "max_epsilon", "the run's epsilon 8 exceeds 3"),
        SiloSpec(
            name="a",
            path="/data/a.csv",
            data=DataSpec(target="num", categorical=("cp", "thal"), positive=("1", "2"), columns=None),
            model=ModelSpec("mlp", (16, 8)),
            he=HEConfig("ckks", ckks=CKKSParams(16384, (60, 40, 40, 60))),
            dp=DPConfig(mode="record", target_epsilon=3.0, planned_rounds=5),
            he_secret_path="/keys/he.key",
        ),
        SiloSpec("b", "/data/b", None, ModelSpec("pkg.mod:factory"), task=task, workers=4),
        ServerStepIns(
            4, payload([0.5]), None, (payload([0.1]), payload([0.2])), ServerOpt("fedadam", eta=0.01)
        ),
        SiloDescription(
            "a",
            100,
            ("age", "cp", "num"),
            ("age", "cp"),
            ("age",),
            {"cp": ("1", "2")},
            ("0", "1"),
            {"age": 2},
            warnings=("one class",),
            manifest=Manifest((TensorSpec("w", (2, 3), "float32"),), ""),
        ),
        KeyBundle(b"ctx", "key-1", {"b": b"sealed-b", "c": b"sealed-c"}),
        PublishRequest("file:///mlruns", "run-1", "heart", version_tags={"fedsilo.run": "1"}),
        AgreedSchema(("age", "cp"), ("age",), ("cp",), (("1", "2"),), ("0", "1")),
        Payload("packed", (b"c0", b"c1"), 9, bound=2.0, layout=(16, 3, 19), unmask=((b"seed", -1),)),
    ]


@pytest.mark.parametrize("message", real_messages(), ids=lambda m: type(m).__name__)
def test_real_messages_round_trip_equal(message: Any) -> None:
    # Act
    got = wire_trip(message)
    # Assert
    assert got == message
    assert_same(got, message)


def test_fit_results_with_array_sums_cross_field_by_field() -> None:
    # Prepare: a task's metrics() sums, numpy arrays and scalars among them
    sums: dict[str, Any] = {
        "loss_sum": np.float64(12.5),
        "count": 40,
        "confusion": np.arange(4, dtype=np.int64).reshape(2, 2),
    }
    evaluation = Evaluation("a", 40, 12.5, 31, positive_hist=(1, 2, 3), negative_hist=(3, 2, 1), sums=sums)
    result = FitRes("a", 3, bound_hint=1.5, examples=160, train_loss=0.25, evaluation=evaluation, epsilon=1.2)
    # Act
    got = wire_trip(result)
    # Assert
    assert_same(got, result)
    assert type(got.evaluation.sums["loss_sum"]) is np.float64
    assert np.array_equal(got.evaluation.as_sums()["confusion"], sums["confusion"])


def test_a_signed_update_still_verifies_after_crossing() -> None:
    # Prepare
    signer = UpdateSigner.generate()
    item = encode_weighted(PlainCodec(), np.linspace(-1, 1, 7), 12.0, tag="round-2/a")
    update = signer.sign("a", "round-2/a", item)
    # Act
    got = wire_trip(update)
    # Assert
    assert isinstance(got, SignedUpdate) and got == update
    assert verify_update(got, "a", "round-2/a", signer.public_bytes()) == item
    assert isinstance(got.item, WeightedPayload)


def test_a_secure_aggregation_session_runs_through_the_wire() -> None:
    # Prepare: three silos' masking sessions; every message between them crosses the wire
    names = ("a", "b", "c")
    sealing = {n: SealingKey.generate() for n in names}
    sessions = {n: MaskingSession(n, sealing[n]) for n in names}
    key = OrchestratorKey()
    deal = MaskDeal("run/s", names, 2, {n: sealing[n].public_bytes() for n in names}, key.public_bytes())
    # Act
    dealt = {n: wire_trip(sessions[n].deal(wire_trip(deal), "fed")) for n in names}
    for n in names:
        sessions[n].masks(wire_trip(MaskRound("run/s", names)))
    answers: list[UnmaskShares] = []
    for n in ("a", "b"):  # c dropped after masking
        relayed = {d: dealt[d].shares[n] for d in dealt if d != n}
        request = wire_trip(key.request("run/s", ("a", "b"), ("c",), relayed))
        answer = sessions[n].unmask(request)
        answers.append(wire_trip(answer))
        assert answers[-1] == answer
    # Assert: the shares are field elements beyond 64 bits, and they still rebuild the masks
    assert max(v for a in answers for vs in a.self_masks.values() for v in vs) >= 2**64
    assert unmask_masks("run/s", ("a", "b"), ("c",), answers, 2)


def test_shamir_shares_of_521_bits_cross() -> None:
    # Prepare
    shares = shamir.split([2**511 + 7], 2, [1, 2, 3])
    # Act
    got = wire_trip(shares)
    # Assert
    assert got == shares and shamir.combine({1: got[1], 3: got[3]}, 2) == [2**511 + 7]


# ---- the whitelist covers SiloWorker's interface


def reachable_dataclasses(hint: Any, found: set[type]) -> set[type]:
    """Every dataclass a type hint names, through unions, generics and dataclass fields."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint) and hint not in found:
        found.add(hint)
        for field_hint in typing.get_type_hints(hint).values():
            reachable_dataclasses(field_hint, found)
    for arg in typing.get_args(hint):
        reachable_dataclasses(arg, found)
    return found


def test_every_dataclass_on_the_silo_interface_is_whitelisted() -> None:
    # Prepare: the constructor and every public method, parameters and return values
    methods = [
        f for name, f in inspect.getmembers(SiloWorker, inspect.isfunction) if not name.startswith("_")
    ]
    found: set[type] = set()
    # Act
    for method in [SiloWorker.__init__, *methods]:
        for hint in typing.get_type_hints(method).values():
            reachable_dataclasses(hint, found)
    # Assert
    assert len(methods) >= 21 and {FitIns, FitRes, UnmaskShares, SiloSpec, TensorSpec} <= found
    # StoredPayload holds object refs of this cluster: the proxy fetches its bytes before the wire
    missing = sorted(f"{c.__module__}.{c.__qualname__}" for c in found - set(WHITELIST) - {StoredPayload})
    assert not missing, f"add to sites.wire.WHITELIST: {missing}"


def test_the_whitelist_holds_frozen_dataclasses_under_unique_names() -> None:
    # Assert
    assert len(NAMES) == len(set(NAMES.values())) == len(WHITELIST)
    for cls in WHITELIST:
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
        assert NAMES[cls] == f"{cls.__module__}.{cls.__name__}"


# ---- refusals


@dataclasses.dataclass(frozen=True)
class NotOnTheWire:
    x: int


class SiloStatusSubclass(SiloStatus):
    pass


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (lambda: 1, "builtins.function"),
        ({1, 2}, "builtins.set"),
        (object(), "builtins.object"),
        (torch.zeros(2), "torch.Tensor"),
        (NotOnTheWire(1), "NotOnTheWire"),
        (OptState(np.zeros(2), np.zeros(2)), "silo.server_opt.OptState"),
        (SiloStatusSubclass("a", "i", True), "SiloStatusSubclass"),
        (np.array([1, "a"], dtype=object), "numpy.ndarray[object]"),
        (np.array(["a"]), "numpy.ndarray[<U1]"),
        (np.zeros(2, dtype=complex), "numpy.ndarray[complex128]"),
        (np.datetime64("2024-01-01"), "numpy.datetime64"),
        (FitIns(1, None, {1}), "builtins.set"),  # type: ignore[arg-type]  # deep inside a message
        ({"a": [1, (2, type)]}, "builtins.type"),
    ],
    ids=lambda v: type(v).__name__,
)
def test_dumps_refuses_what_would_need_pickle_and_names_the_type(value: Any, type_name: str) -> None:
    # Act / Assert
    with pytest.raises(WireError, match="cannot cross the site boundary") as refused:
        dumps(value)
    assert type_name in str(refused.value)


def test_dumps_refuses_ints_beyond_the_big_int_range_and_cycles() -> None:
    # Prepare
    cycle: list[Any] = []
    cycle.append(cycle)
    # Act / Assert
    with pytest.raises(WireError, match="bits cannot cross"):
        dumps(2**1100)
    with pytest.raises(WireError, match="cannot encode"):
        dumps(cycle)


@given(data=st.binary(max_size=200))
def test_loads_of_any_bytes_is_a_value_or_a_wire_error(data: bytes) -> None:
    # Act / Assert: never any other exception
    with contextlib.suppress(WireError):
        loads(data)


def test_loads_refuses_garbage_and_every_truncation() -> None:
    # Prepare
    data = dumps(FitIns(3, payload([1.0, 2.0]), FitConfig(1, 8, 0.1)))
    # Act / Assert
    for garbage in (b"", b"\xc1", bytes(range(256)), data + b"\x00"):
        with pytest.raises(WireError, match="malformed message"):
            loads(garbage)
    for end in range(len(data)):
        with pytest.raises(WireError, match="malformed message"):
            loads(data[:end])


def dataclass_ext(name: str, fields: dict[Any, Any]) -> bytes:
    return msgpack.packb(msgpack.ExtType(_DATACLASS, msgpack.packb([name, fields])))


@pytest.mark.parametrize("name", ["os.system", "builtins.eval", "silo.server_opt.OptState", "SiloStatus"])
def test_loads_refuses_classes_outside_the_whitelist(name: str) -> None:
    # Act / Assert
    with pytest.raises(WireError, match=f"class '{name}' is not in the wire whitelist"):
        loads(dataclass_ext(name, {"silo": "a"}))


def test_loads_refuses_unknown_and_missing_fields_naming_them() -> None:
    # Prepare
    fields = {"silo": "a", "incarnation": "i", "ready": True}
    # Act / Assert
    with pytest.raises(WireError, match="silo.messages.SiloStatus: unknown field 'evil'"):
        loads(dataclass_ext("silo.messages.SiloStatus", {**fields, "evil": 1}))
    with pytest.raises(WireError, match="silo.messages.SiloStatus: field 'ready' missing"):
        loads(dataclass_ext("silo.messages.SiloStatus", {"silo": "a", "incarnation": "i"}))
    with pytest.raises(WireError, match="silo.server_opt.ServerOpt: unknown server optimizer"):
        loads(dumps(ServerOpt("fedadam")).replace(b"fedadam", b"fedevil"))  # its own check refuses


TRIPPED: list[str] = []


def tripwire() -> str:
    TRIPPED.append("unpickled")
    return "tripped"


class Exploit:
    def __reduce__(self) -> tuple[Any, ...]:
        return (tripwire, ())


@pytest.mark.parametrize("value", [SiloStatus("a", "i", True), Exploit(), {"x": 1}], ids=type)
def test_loads_never_unpickles(value: Any) -> None:
    # Prepare
    data = pickle.dumps(value)
    # Act / Assert
    with pytest.raises(WireError, match="malformed message"):
        loads(data)
    assert not TRIPPED


@pytest.mark.parametrize(
    "data",
    [
        msgpack.packb(msgpack.ExtType(42, b"")),  # an ext code outside the schema
        msgpack.packb(msgpack.ExtType(2, msgpack.packb(["|O", [1], b"\x00" * 8]))),  # object dtype
        msgpack.packb(msgpack.ExtType(2, msgpack.packb(["<f8", [2, 2], b"\x00" * 8]))),  # bytes short
        msgpack.packb(msgpack.ExtType(2, msgpack.packb(["<f8", [-1], b""]))),  # negative dimension
        msgpack.packb(msgpack.ExtType(2, msgpack.packb(["<f8", [2**40, 2**40], b""]))),  # huge shape
        msgpack.packb(msgpack.ExtType(3, msgpack.packb(["<i8", b"\x00"]))),  # scalar bytes short
        msgpack.packb(msgpack.ExtType(5, b"\x01" * 1000)),  # an int beyond the big-int limit
        msgpack.packb({1.5: "float key"}),
        msgpack.packb({True: "bool key"}),
        msgpack.packb([msgpack.Timestamp(0)]),
        msgpack.packb(msgpack.Timestamp(0)),
        b"\xa2\xff\xfe",  # a str that is not UTF-8
    ],
)
def test_loads_refuses_values_outside_the_schema(data: bytes) -> None:
    # Act / Assert
    with pytest.raises(WireError, match="malformed message"):
        loads(data)


def test_messages_over_the_limit_are_refused_both_ways() -> None:
    # Prepare
    value = {"chunk": b"x" * 2000}
    data = dumps(value)
    # Act / Assert
    with pytest.raises(WireError, match="exceeds the limit of 1000 bytes"):
        dumps(value, limit=1000)
    with pytest.raises(WireError, match="exceeds the limit of 1000 bytes"):
        loads(data, limit=1000)
    assert loads(data, limit=len(data)) == value
    assert MAX_MESSAGE_BYTES == 512 * 2**20

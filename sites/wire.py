"""The coordinator <-> site wire format: silo method arguments and results as msgpack, never pickle.

Sites belong to organizations that do not trust each other, so a message may only hold values of
a fixed schema: None, bool, int, float, str, bytes (bytearray and memoryview arrive as bytes),
list, tuple (arrives as tuple), dict with str or int keys (`loads` checks them), numpy arrays of
bool/int/uint/float dtypes (dtype and shape kept; little-endian on the wire; they arrive writeable
and native-endian), numpy scalars (they arrive as the same numpy scalar type: np.float32(1) stays
np.float32), and the frozen dataclasses in `WHITELIST`, registered as ``"module.ClassName"`` and
rebuilt with ``cls(**fields)``. A str or int subclass (a StrEnum, an IntEnum) is sent as the plain str or int.
Ints travel natively in the int64/uint64 range; larger ones (secure aggregation's Shamir shares
are elements of GF(2^521 - 1)) as an ext of at most `MAX_INT_BYTES` two's-complement bytes.

Anything else is refused by `dumps`, and `loads` refuses oversized or malformed data, unknown ext
codes, class names outside the whitelist, and missing or unknown fields: `WireError` every time.
`loads` never imports or looks up anything by a name the message holds beyond the whitelist, and
never unpickles. Field *types* are not checked against the annotations: the receiver's code must
still treat the values as a peer's input.

Tests: ``. .venv/bin/activate && python -m pytest tests/sites/test_wire.py -q``
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import numpy as np

from privacy.aggregate import WeightedPayload
from privacy.codec import Payload
from privacy.dp import DPConfig
from privacy.params import CKKSParams, HEConfig, PackedParams
from privacy.secagg import Dealt, MaskDeal, MaskRound, UnmaskRequest, UnmaskShares
from privacy.signing import SignedUpdate
from silo.config import DataSpec, ModelSpec, SiloSpec
from silo.data import SiloDescription
from silo.exchange import Manifest, TensorSpec
from silo.messages import (
    Evaluation,
    FitConfig,
    FitIns,
    FitRes,
    KeyBundle,
    PublishedModel,
    PublishRequest,
    ServerStepIns,
    ServerStepRes,
    SiloKeys,
    SiloReady,
    SiloStatus,
)
from silo.preprocess import AgreedSchema
from silo.server_opt import ServerOpt
from silo.task import TaskSpec
from sites.terms import Refusal, RunTerms

MAX_MESSAGE_BYTES = 512 * 2**20
MAX_INT_BYTES = 128  # an int beyond uint64/int64: up to 1023 bits and a sign

# Every dataclass that crosses SiloWorker's interface (tests/sites/test_wire.py checks that none
# is missing), and the site's own terms and refusals.
WHITELIST: tuple[type, ...] = (
    # silo.messages
    FitConfig, FitIns, Evaluation, FitRes, SiloKeys, KeyBundle, SiloStatus, SiloReady,
    PublishRequest, PublishedModel, ServerStepIns, ServerStepRes,
    # what they carry, and the other methods' arguments and results
    Payload, WeightedPayload, SignedUpdate, ServerOpt, AgreedSchema, SiloDescription, Manifest,
    TensorSpec, MaskDeal, Dealt, MaskRound, UnmaskRequest, UnmaskShares,
    # the silo's construction
    SiloSpec, DataSpec, ModelSpec, HEConfig, CKKSParams, PackedParams, DPConfig, TaskSpec,
    # sites
    RunTerms, Refusal,
)  # fmt: skip
NAMES: dict[type, str] = {cls: f"{cls.__module__}.{cls.__qualname__}" for cls in WHITELIST}
_CLASSES: dict[str, type] = {name: cls for cls, name in NAMES.items()}
_FIELDS: dict[type, tuple[str, ...]] = {  # declared order: the same value always packs the same bytes
    cls: tuple(f.name for f in dataclasses.fields(cls) if f.init) for cls in WHITELIST
}

_TUPLE, _NDARRAY, _NPSCALAR, _DATACLASS, _BIGINT = 1, 2, 3, 4, 5
_DTYPES: dict[str, np.dtype[Any]] = {
    np.dtype(t).newbyteorder("<").str: np.dtype(t)
    for t in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
    + ("float16", "float32", "float64")
}
_MAX_NDIM = 32


class WireError(ValueError):
    """A value outside the wire schema, or a message that is malformed, oversized or unknown."""


def _refuse(obj: object, what: str = "this value", suffix: str = "") -> WireError:
    name = f"{type(obj).__module__}.{type(obj).__qualname__}{suffix}"
    return WireError(f"{what} cannot cross the site boundary: type {name} is not in the wire schema")


def _wire_dtype(obj: np.ndarray | np.generic) -> str:
    wire = obj.dtype.newbyteorder("<").str
    if wire not in _DTYPES:
        raise _refuse(obj, f"numpy dtype {obj.dtype}", f"[{obj.dtype}]")
    return wire


def _pack(value: object) -> bytes:
    return msgpack.packb(value, default=_default, strict_types=True, use_bin_type=True)


def _default(obj: object) -> object:
    """What msgpack does not pack natively under ``strict_types``: an ext type, a plain value, or refusal."""
    if type(obj) is tuple:
        return msgpack.ExtType(_TUPLE, _pack(list(obj)))
    if type(obj) in NAMES:
        fields = {name: getattr(obj, name) for name in _FIELDS[type(obj)]}
        return msgpack.ExtType(_DATACLASS, _pack([NAMES[type(obj)], fields]))
    if isinstance(obj, str):  # a StrEnum, np.str_: the plain string
        return str.__str__(obj)
    if type(obj) is np.ndarray:
        wire = _wire_dtype(obj)
        data = np.ascontiguousarray(obj, dtype=np.dtype(wire)).tobytes()
        return msgpack.ExtType(_NDARRAY, _pack([wire, list(obj.shape), data]))
    if isinstance(obj, np.generic):
        wire = _wire_dtype(obj)
        return msgpack.ExtType(_NPSCALAR, _pack([wire, np.asarray(obj, dtype=np.dtype(wire)).tobytes()]))
    if type(obj) is int:  # msgpack hands over the ints beyond 64 bits
        size = (obj.bit_length() + 8) // 8  # room for the sign bit
        if size > MAX_INT_BYTES:
            raise WireError(f"an int of {obj.bit_length()} bits cannot cross the site boundary: "
                            f"the limit is {MAX_INT_BYTES} bytes")  # fmt: skip
        return msgpack.ExtType(_BIGINT, obj.to_bytes(size, "big", signed=True))
    if isinstance(obj, int) and not isinstance(obj, bool):  # an IntEnum: the plain int
        return int(obj)
    if isinstance(obj, dict):  # OrderedDict, defaultdict: a plain dict
        return dict(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        raise _refuse(obj, "a dataclass outside sites.wire.WHITELIST")
    raise _refuse(obj)


def dumps(value: object, *, limit: int = MAX_MESSAGE_BYTES) -> bytes:
    """``value`` as msgpack; WireError if a type is outside the schema or the result exceeds ``limit``."""
    try:
        data = _pack(value)
    except WireError:
        raise
    except (ValueError, TypeError, OverflowError, RecursionError) as e:
        raise WireError(f"cannot encode {type(value).__qualname__}: {e}") from e
    if len(data) > limit:
        raise WireError(f"message of {len(data)} bytes exceeds the limit of {limit} bytes")
    return data


def _list_hook(items: list[Any]) -> list[Any]:
    if any(type(x) is msgpack.Timestamp for x in items):
        raise WireError("malformed message: a msgpack timestamp is not in the wire schema")
    return items


def _pairs_hook(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    for key, value in pairs:
        if type(key) not in (str, int):
            raise WireError(f"malformed message: a map key of type {type(key).__qualname__}, not str or int")
        if type(value) is msgpack.Timestamp:
            raise WireError("malformed message: a msgpack timestamp is not in the wire schema")
    return dict(pairs)


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(
        data,
        raw=False,
        strict_map_key=False,
        ext_hook=_ext,
        list_hook=_list_hook,
        object_pairs_hook=_pairs_hook,
    )


def _ext(code: int, payload: bytes) -> Any:
    if code == _BIGINT:
        if not 0 < len(payload) <= MAX_INT_BYTES:
            raise WireError(f"malformed message: an int of {len(payload)} bytes (max {MAX_INT_BYTES})")
        return int.from_bytes(payload, "big", signed=True)
    body = _unpack(payload)
    if code == _TUPLE and type(body) is list:
        return tuple(body)
    if code == _NPSCALAR and type(body) is list and len(body) == 2 and body[0] in _DTYPES:
        dtype = _DTYPES[body[0]]
        if type(body[1]) is not bytes or len(body[1]) != dtype.itemsize:
            raise WireError(f"malformed message: a {dtype} scalar of {len(body[1])} bytes")
        return np.frombuffer(body[1], dtype=np.dtype(body[0])).astype(dtype)[0]
    if code == _NDARRAY and type(body) is list and len(body) == 3 and body[0] in _DTYPES:
        wire, shape, data = body
        dims_ok = type(shape) is list and all(type(n) is int and n >= 0 for n in shape)
        if not dims_ok or len(shape) > _MAX_NDIM:
            raise WireError(f"malformed message: array shape {shape!r}")
        size = int(np.prod(shape, dtype=object)) * _DTYPES[wire].itemsize
        if type(data) is not bytes or len(data) != size:
            raise WireError(f"malformed message: array of shape {tuple(shape)} {wire} needs {size} bytes")
        return np.frombuffer(data, dtype=np.dtype(wire)).astype(_DTYPES[wire]).reshape(shape)
    if code == _DATACLASS and type(body) is list and len(body) == 2 and type(body[1]) is dict:
        name, fields = body
        cls = _CLASSES.get(name) if type(name) is str else None
        if cls is None:
            raise WireError(f"malformed message: class {name!r} is not in the wire whitelist")
        unknown, missing = set(fields) - set(_FIELDS[cls]), set(_FIELDS[cls]) - set(fields)
        if unknown or missing:
            what = (
                f"unknown field {min(map(str, unknown))!r}" if unknown else f"field {min(missing)!r} missing"
            )
            raise WireError(f"malformed message: {name}: {what}")
        try:
            return cls(**fields)
        except Exception as e:  # the class's own checks (__post_init__) refuse the values
            raise WireError(f"malformed message: {name}: {e}") from e
    raise WireError(f"malformed message: ext type {code} does not hold a valid value")


def loads(data: bytes, *, limit: int = MAX_MESSAGE_BYTES) -> object:
    """The value `dumps` encoded; WireError for oversized or malformed data, unknown names, wrong fields."""
    if len(data) > limit:
        raise WireError(f"message of {len(data)} bytes exceeds the limit of {limit} bytes")
    try:
        value = _unpack(data)
    except WireError:
        raise
    except (ValueError, TypeError, OverflowError, RecursionError) as e:  # msgpack's, UnicodeDecodeError
        raise WireError(f"malformed message: {type(e).__name__}: {e}") from e
    if type(value) is msgpack.Timestamp:
        raise WireError("malformed message: a msgpack timestamp is not in the wire schema")
    return value

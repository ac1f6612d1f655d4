"""The msgpack-numpy codec of openpi's wire, written for hostile input.

An ndarray travels as {b"__ndarray__": True, b"data": raw bytes, b"dtype": dtype.str, b"shape": [..]}, a numpy
scalar as {b"__npgeneric__": True, b"data": value, b"dtype": dtype.str} (openpi-client's encoding; str keys are
read too). Only bool, int, uint and float dtypes are read or written, so pickle is never needed; anything else,
a shape that does not match the bytes, or bytes that are not one msgpack object is a `ServeError`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from wam.extras import require
from wam.serve.errors import ServeError

msgpack = require("msgpack", "serving (wam.serve)")
require("websockets", "serving (wam.serve)")

DTYPE_KINDS = "biuf"
"""Readable dtype kinds: bool, signed and unsigned int, float."""
MAX_DIMS = 8


def _encode(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind not in DTYPE_KINDS:
        raise TypeError(f"dtype {obj.dtype} is not sent on the wire; expected bool, int, uint or float")
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": np.ascontiguousarray(obj).tobytes(), b"dtype": obj.dtype.str,
                b"shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot send {type(obj).__name__} on the wire")


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, default=_encode, use_bin_type=True)


def _field(obj: dict, name: str) -> Any:
    for key in (name.encode(), name):
        if key in obj:
            return obj[key]
    raise ServeError("bad_array", f"an encoded array has no {name!r}: expected keys __ndarray__, data, dtype, shape")


def _dtype(obj: dict) -> np.dtype:
    name = _field(obj, "dtype")
    try:
        dtype = np.dtype(name.decode() if isinstance(name, bytes) else name) if isinstance(name, (str, bytes)) else None
    except (TypeError, ValueError, SyntaxError):
        dtype = None
    if dtype is None or dtype.kind not in DTYPE_KINDS or dtype.shape or dtype.fields:
        raise ServeError("bad_array", f"dtype {name!r:.40} refused: expected a bool, int, uint or float dtype string")
    return dtype


def _decode(obj: dict) -> Any:
    if b"__ndarray__" in obj or "__ndarray__" in obj:
        dtype, data, shape = _dtype(obj), _field(obj, "data"), _field(obj, "shape")
        if not isinstance(data, bytes):
            raise ServeError("bad_array", f"an array's data must be bytes, got {type(data).__name__}")
        if (not isinstance(shape, (list, tuple)) or len(shape) > MAX_DIMS
                or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
            raise ServeError("bad_array", f"an array's shape must be a list of at most {MAX_DIMS} ints >= 0, got {shape!r:.60}")
        if math.prod(shape) * dtype.itemsize != len(data):
            raise ServeError("bad_array", f"shape {list(shape)} of {dtype} needs {math.prod(shape) * dtype.itemsize} "
                                          f"bytes, got {len(data)}")
        return np.frombuffer(data, dtype).reshape(shape).copy()
    if b"__npgeneric__" in obj or "__npgeneric__" in obj:
        dtype, value = _dtype(obj), _field(obj, "data")
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (isinstance(value, bool) if dtype.kind == "b" else number):
            raise ServeError("bad_array", f"a numpy scalar of {dtype} cannot hold {value!r:.40}")
        try:
            return dtype.type(value)
        except (OverflowError, ValueError, TypeError) as e:
            raise ServeError("bad_array", f"a numpy scalar of {dtype} cannot hold {value!r:.40}: {e}") from None
    return obj


def unpack(data: bytes) -> Any:
    """One msgpack object, arrays decoded; a `ServeError` for anything else."""
    try:
        return msgpack.unpackb(data, object_hook=_decode, raw=False, strict_map_key=True)
    except ServeError:
        raise
    except Exception as e:  # msgpack raises several kinds (ExtraData, FormatError, StackError, ValueError, ...)
        raise ServeError("not_msgpack", f"the message is not one msgpack object ({type(e).__name__}: {e})"[:300]) from None

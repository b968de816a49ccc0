"""V2 tensor ``data`` -> numpy arrays: JSON lists and binary tensor bytes, checked per element.

Kept apart from the request's structure (:mod:`~packserve.serve.v2.decode`) because this is
where the values live: JSON element types per datatype, integer ranges, NaN/Inf (except a
missing value where the model accepts one), binary sizes and length-prefixed UTF-8 ``BYTES``.
Every problem raises :class:`BadRequestError` (HTTP 400).
"""

from __future__ import annotations

import math
from itertools import chain
from typing import Any

import numpy as np

from packserve.errors import BadRequestError
from packserve.serve.v2.metadata import U32, WIRE

__all__ = ["Missing", "bytes_elements", "from_binary", "from_json", "nested_flat"]

# Python element types JSON ``data`` may hold per datatype (bool is *not* a number here).
_JSON_TYPES: dict[str, frozenset[type]] = {
    "FP32": frozenset({float, int}),
    "FP64": frozenset({float, int}),
    "INT32": frozenset({int}),
    "INT64": frozenset({int}),
    "BOOL": frozenset({bool}),
    "BYTES": frozenset({str}),
}
_JSON_NAMES: dict[type, str] = {
    bool: "boolean", int: "integer", float: "decimal number", str: "string",
    type(None): "null", list: "array", dict: "object",
}
_INT_RANGE = {"INT32": (-(2**31), 2**31 - 1), "INT64": (-(2**63), 2**63 - 1)}


def _bad(message: str) -> BadRequestError:
    return BadRequestError(message)


# Per-column "may be missing" of one input, with its feature names; None: nothing may be.
Missing = tuple[np.ndarray, list[str]] | None


def nested_flat(data: list[Any], shape: tuple[int, ...], where: str) -> list[Any]:
    """Flatten ``data`` (flat, fully or partly nested, row-major) checking it fits ``shape``."""
    dims = [len(data)]
    flat = data
    while flat and type(flat[0]) is list:
        if len(dims) >= len(shape):
            raise _bad(f"{where}: 'data' is nested deeper than the shape {list(shape)}")
        if set(map(type, flat)) != {list}:
            raise _bad(f"{where}: 'data' mixes lists and values at one level")
        widths = set(map(len, flat))
        if len(widths) != 1:
            raise _bad(f"{where}: 'data' is ragged (rows of different lengths)")
        dims.append(widths.pop())
        flat = list(chain.from_iterable(flat))
    k = len(dims) - 1
    fits = tuple(dims[:k]) == shape[:k] and dims[k] == math.prod(shape[k:])
    if not fits:
        raise _bad(
            f"{where}: 'data' has {len(flat)} elements laid out as {dims}, "
            f"which does not match the shape {list(shape)}"
        )
    return flat


def from_json(
    data: Any, datatype: str, shape: tuple[int, ...], where: str, missing: Missing = None
) -> np.ndarray:
    if not isinstance(data, list):
        raise _bad(f"{where}: 'data' must be a JSON array")
    flat = nested_flat(data, shape, where)
    allowed = _JSON_TYPES[datatype]
    if missing is not None and missing[0].any() and datatype in ("FP32", "FP64"):
        allowed = allowed | {type(None)}
    found = set(map(type, flat))
    if not found <= allowed:
        bad = sorted({_JSON_NAMES.get(t, "unsupported") for t in found - allowed})
        why = ("; null is a missing value and this model does not accept missing values here"
               if type(None) in found and datatype in ("FP32", "FP64") else "")
        raise _bad(f"{where}: {datatype} data cannot hold {', '.join(bad)} values{why}")
    if datatype == "BYTES":
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
        return arr.reshape(shape)
    if datatype == "BOOL":
        return np.asarray(flat, dtype=np.bool_).reshape(shape)
    if datatype in _INT_RANGE:
        lo, hi = _INT_RANGE[datatype]
        if flat and (min(flat) < lo or max(flat) > hi):
            raise _bad(f"{where}: a value is out of the {datatype} range")
        return np.asarray(flat, dtype=WIRE[datatype]).reshape(shape)
    try:
        wide = np.asarray(flat, dtype=np.float64)  # null -> NaN (only where missing is allowed)
    except OverflowError:
        raise _bad(f"{where}: an integer value is too large for {datatype}") from None
    return _finite(wide, datatype, where, missing).reshape(shape)


def _finite(wide: np.ndarray, datatype: str, where: str, missing: Missing = None) -> np.ndarray:
    """Refuse Inf (also values that only overflow when narrowed to FP32) and NaN, except NaN
    in a feature the model accepts missing values for.

    One ``isfinite`` pass on the final array covers all three (NaN and Inf survive the
    narrowing, an overflow becomes Inf); the wide array is consulted only to say which."""
    if datatype == "FP64":
        out = wide
    else:
        with np.errstate(over="ignore"):
            out = wide.astype(np.float32)
    if not np.isfinite(out).all():
        _refuse_non_finite(out, wide, where, missing)
    return out


def _refuse_non_finite(out: np.ndarray, wide: np.ndarray, where: str, missing: Missing) -> None:
    flat = out.reshape(-1)
    bad = ~np.isfinite(flat)
    if missing is not None:
        ok, _ = missing
        cols = np.resize(ok, flat.shape[0])  # row-major: element i is column i % n_columns
        bad &= ~(np.isnan(flat) & cols)
    if not bad.any():
        return
    i = int(np.flatnonzero(bad)[0])
    value = wide.reshape(-1)[i]
    if np.isfinite(value):
        raise _bad(f"{where}: value overflows FP32 at element {i}")
    if np.isinf(value):
        raise _bad(f"{where}: infinite value at element {i}")
    feature = ""
    if missing is not None:
        feature = f" (feature {missing[1][i % len(missing[1])]!r})"
    raise _bad(
        f"{where}: missing value (NaN / null) at element {i}{feature}; this model does not "
        "accept missing values there"
    )


def from_binary(
    raw: memoryview, datatype: str, shape: tuple[int, ...], where: str, missing: Missing = None
) -> np.ndarray:
    count = math.prod(shape)
    wire = WIRE[datatype]
    if wire is None:
        return bytes_elements(raw, count, where).reshape(shape)
    if len(raw) != count * wire.itemsize:
        raise _bad(
            f"{where}: binary_data_size is {len(raw)} bytes but shape {list(shape)} of "
            f"{datatype} needs {count * wire.itemsize}"
        )
    if datatype == "BOOL":
        octets = np.frombuffer(raw, dtype=np.uint8)
        if (octets > 1).any():
            raise _bad(f"{where}: BOOL binary data must be bytes 0 or 1")
        return octets.astype(np.bool_).reshape(shape)
    arr = np.frombuffer(raw, dtype=wire).astype(wire.newbyteorder("="))  # copy, native order
    if datatype in ("FP32", "FP64") and not np.isfinite(arr).all():
        _refuse_non_finite(arr, arr, where, missing)
    return arr.reshape(shape)


def bytes_elements(raw: memoryview, count: int, where: str, *, text: bool = True) -> np.ndarray:
    """Decode ``count`` length-prefixed elements that must fill ``raw`` exactly: UTF-8
    strings, or (``text=False``) the bytes as they are (encoded images)."""
    if 4 * count > len(raw):  # every element has a 4-byte length: refuse before allocating
        raise _bad(f"{where}: binary_data_size {len(raw)} is too small for {count} BYTES elements")
    out = np.empty(count, dtype=object)
    buf = raw.tobytes()
    pos = 0
    for i in range(count):
        if pos + 4 > len(buf):
            raise _bad(f"{where}: BYTES binary data ends inside element {i}")
        (n,) = U32.unpack_from(buf, pos)
        pos += 4
        if pos + n > len(buf):
            raise _bad(f"{where}: BYTES element {i} runs past binary_data_size")
        if not text:
            out[i] = buf[pos : pos + n]
        else:
            try:
                out[i] = buf[pos : pos + n].decode("utf-8")
            except UnicodeDecodeError:
                raise _bad(f"{where}: BYTES element {i} is not valid UTF-8 text") from None
        pos += n
    if pos != len(buf):
        raise _bad(f"{where}: binary_data_size has {len(buf) - pos} bytes beyond {count} elements")
    return out

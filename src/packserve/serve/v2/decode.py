"""V2 inference requests -> validated :data:`~packserve.runtime.Feeds` (JSON and binary).

Everything a client can get wrong raises :class:`BadRequestError` (HTTP 400) before anything
is computed: JSON that is not JSON (NaN/Infinity literals included), unknown or missing
inputs, a datatype or shape the model does not take, ragged or mistyped ``data``, NaN/Inf in
JSON or binary floats, binary sizes that do not add up, invalid UTF-8 in ``BYTES``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np
import orjson

from packserve.bundle import Manifest, TensorSpec
from packserve.errors import BadRequestError, InputError
from packserve.runtime.inputs import Feeds
from packserve.runtime.tensors import InputChecker
from packserve.serve.v2.metadata import (
    FROM_MANIFEST,
    HEADER_LENGTH,
    U32,
    WIRE,
    TensorMeta,
    output_metadata,
    v2_shape,
)

__all__ = ["InferRequest", "RequestedOutput", "parse_infer_request", "plan_for"]

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


@dataclass(frozen=True, slots=True)
class _Plan:
    """What parsing and encoding need from a manifest, computed once per manifest."""

    inputs: dict[str, tuple[TensorSpec, str, tuple[int, ...]]]  # name -> (spec, datatype, shape)
    order: tuple[str, ...]
    # name -> per-column "may be missing" (NaN / null), for inputs filled from features
    missing: dict[str, np.ndarray]
    # tensor bundles: each input's value checks (integer ranges, booleans, float overflow),
    # the same code as /predict and the Python API
    checkers: dict[str, InputChecker]
    outputs: dict[str, TensorMeta]
    all_outputs: dict[bool, tuple[RequestedOutput, ...]]


_PLANS: dict[int, tuple[Manifest, _Plan]] = {}


def plan_for(manifest: Manifest) -> _Plan:
    """The manifest's parsing/encoding plan, computed once per manifest object."""
    hit = _PLANS.get(id(manifest))
    if hit is not None and hit[0] is manifest:
        return hit[1]
    outs = {t.name: t for t in output_metadata(manifest)}
    plan = _Plan(
        inputs={s.name: (s, FROM_MANIFEST[s.dtype], v2_shape(s)) for s in manifest.inputs},
        order=tuple(s.name for s in manifest.inputs),
        missing=_missing_masks(manifest),
        checkers={s.name: InputChecker(s) for s in manifest.inputs} if manifest.is_tensor else {},
        outputs=outs,
        all_outputs={b: tuple(RequestedOutput(n, b) for n in outs) for b in (False, True)},
    )
    if len(_PLANS) >= 256:  # loaded manifests are few; never let hot reloads grow this
        _PLANS.clear()
    _PLANS[id(manifest)] = (manifest, plan)
    return plan


def _missing_masks(manifest: Manifest) -> dict[str, np.ndarray]:
    allowed = {f.name for f in manifest.features if f.allow_missing}
    return {s.name: np.array([f in allowed for f in s.features]) for s in manifest.inputs
            if s.features}


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(slots=True)
class InferRequest:
    """A validated inference request: ready-to-run feeds and what to send back."""

    feeds: Feeds
    rows: int
    outputs: list[RequestedOutput]
    id: str | None = None
    timeout_s: float | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


def _split_body(body: bytes, header_length: str | bytes | int | None) -> tuple[bytes, memoryview]:
    if header_length is None:
        return body, memoryview(b"")
    try:
        n = int(header_length)
    except (TypeError, ValueError):
        shown = header_length.decode("latin-1") if isinstance(header_length, bytes) else str(header_length)
        raise _bad(f"{HEADER_LENGTH} must be an integer, got {shown[:40]!r}") from None
    if n < 0 or n > len(body):
        raise _bad(f"{HEADER_LENGTH} is {n} but the body has {len(body)} bytes")
    return body[:n], memoryview(body)[n:]


def _load_json(header: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        # orjson refuses NaN / Infinity literals and numbers that overflow a double: say so.
        pos, msg = int(exc.pos), str(exc.msg)
        if "infinity" in msg.lower():
            raise _bad(f"request body is not valid JSON: a number overflows a double (char {pos})") from None
        if header[pos : pos + 9].lstrip(b"-+").startswith((b"NaN", b"Infinity", b"inf", b"nan")):
            raise _bad(
                f"request body is not valid JSON: NaN and Infinity are not JSON numbers (char {pos})"
            ) from None
        raise _bad(f"request body is not valid JSON: {msg} (char {pos})") from None
    if not isinstance(doc, dict):
        raise _bad("request body must be a JSON object")
    return doc


def _params(obj: Mapping[str, Any], where: str) -> dict[str, Any]:
    params = obj.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise _bad(f"{where}: 'parameters' must be an object")
    return params


def _bool_param(params: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise _bad(f"{where}: parameter {key!r} must be true or false")
    return value


def _shape_of(obj: Mapping[str, Any], where: str) -> tuple[int, ...]:
    shape = obj.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise _bad(f"{where}: 'shape' must be a list of non-negative integers")
    return tuple(shape)


def _nested_flat(data: list[Any], shape: tuple[int, ...], where: str) -> list[Any]:
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


def _from_json(
    data: Any, datatype: str, shape: tuple[int, ...], where: str, missing: _Missing = None
) -> np.ndarray:
    if not isinstance(data, list):
        raise _bad(f"{where}: 'data' must be a JSON array")
    flat = _nested_flat(data, shape, where)
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


# Per-column "may be missing" of one input, with its feature names; None: nothing may be.
_Missing = tuple[np.ndarray, list[str]] | None


def _finite(wide: np.ndarray, datatype: str, where: str, missing: _Missing = None) -> np.ndarray:
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


def _refuse_non_finite(out: np.ndarray, wide: np.ndarray, where: str, missing: _Missing) -> None:
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


def _from_binary(
    raw: memoryview, datatype: str, shape: tuple[int, ...], where: str, missing: _Missing = None
) -> np.ndarray:
    count = math.prod(shape)
    wire = WIRE[datatype]
    if wire is None:
        return _bytes_elements(raw, count, where).reshape(shape)
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


def _bytes_elements(raw: memoryview, count: int, where: str) -> np.ndarray:
    """Decode ``count`` length-prefixed UTF-8 strings that must fill ``raw`` exactly."""
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
        try:
            out[i] = buf[pos : pos + n].decode("utf-8")
        except UnicodeDecodeError:
            raise _bad(f"{where}: BYTES element {i} is not valid UTF-8 text") from None
        pos += n
    if pos != len(buf):
        raise _bad(f"{where}: binary_data_size has {len(buf) - pos} bytes beyond {count} elements")
    return out


def _check_against_spec(
    where: str, datatype: str, shape: tuple[int, ...], expected: str, want: tuple[int, ...],
    max_rows: int | None,
) -> None:
    if datatype != expected:
        raise _bad(f"{where}: datatype is {datatype}, the model takes {expected}")
    if len(shape) != len(want) or (
        shape[1:] != want[1:] and any(w != -1 and w != s for s, w in zip(shape, want, strict=True))
    ):
        raise _bad(f"{where}: shape {list(shape)} does not match the model's {list(want)}")
    if not shape or shape[0] == 0:
        raise _bad(f"{where}: no rows given (batch dimension is 0)")
    if max_rows is not None and shape[0] > max_rows:
        raise _bad(f"{where}: {shape[0]} rows exceed this server's limit of {max_rows} per request")


def _parse_inputs(
    doc: Mapping[str, Any], binary: memoryview, plan: _Plan, max_rows: int | None
) -> tuple[Feeds, int]:
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise _bad("'inputs' must be a non-empty list of tensors")
    specs = plan.inputs
    feeds: Feeds = {}
    offset = 0
    for i, item in enumerate(raw_inputs):
        if not isinstance(item, dict):
            raise _bad(f"inputs[{i}] must be an object")
        name = item.get("name")
        if not isinstance(name, str):
            raise _bad(f"inputs[{i}]: 'name' must be a string")
        where = f"input {name!r}"
        known = specs.get(name)
        if known is None:
            raise _bad(f"unknown input {name!r}; the model takes {sorted(specs)}")
        if name in feeds:
            raise _bad(f"{where} is given twice")
        datatype = item.get("datatype")
        if datatype not in WIRE:
            raise _bad(f"{where}: unknown datatype {str(datatype)[:20]!r}")
        assert isinstance(datatype, str)
        shape = _shape_of(item, where)
        _check_against_spec(where, datatype, shape, known[1], known[2], max_rows)
        mask = plan.missing.get(name)
        gaps = None if mask is None else (mask, known[0].features)
        params = _params(item, where)
        if "shared_memory_region" in params:
            raise _bad(f"{where}: the shared-memory extension is not supported")
        size = params.get("binary_data_size")
        if size is not None:
            if "data" in item:
                raise _bad(f"{where}: give either 'data' or binary_data_size, not both")
            if type(size) is not int or size < 0:
                raise _bad(f"{where}: binary_data_size must be a non-negative integer")
            if offset + size > len(binary):
                raise _bad(
                    f"{where}: binary_data_size {size} runs past the end of the body "
                    f"({len(binary) - offset} binary bytes left)"
                )
            arr = _from_binary(binary[offset : offset + size], datatype, shape, where, gaps)
            offset += size
        elif "data" in item:
            arr = _from_json(item["data"], datatype, shape, where, gaps)
        else:
            raise _bad(f"{where}: has neither 'data' nor parameters.binary_data_size")
        checker = plan.checkers.get(name)
        if checker is not None:
            try:
                arr = checker.convert(arr)
            except InputError as exc:
                raise _bad(exc.message) from None
        feeds[name] = arr
    if offset != len(binary):
        raise _bad(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    missing = [n for n in specs if n not in feeds]
    if missing:
        raise _bad(f"missing input(s) {missing}")
    rows = {int(a.shape[0]) for a in feeds.values()}
    if len(rows) != 1:
        raise _bad(f"inputs disagree on the batch size: {sorted(rows)}")
    # Feed in the artifact's order (what concat_feeds and the runtime expect).
    return {n: feeds[n] for n in plan.order}, rows.pop()


def _parse_outputs(
    doc: Mapping[str, Any], plan: _Plan, binary_default: bool
) -> list[RequestedOutput]:
    raw = doc.get("outputs")
    if raw is None:
        return list(plan.all_outputs[binary_default])
    if type(raw) is not list:
        raise _bad("'outputs' must be a list")
    out: list[RequestedOutput] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        name = item.get("name") if type(item) is dict else None
        if type(name) is not str:
            raise _bad(f"outputs[{i}] must be an object with a string 'name'")
        if name not in plan.outputs:
            raise _bad(f"unknown output {name!r}; the model has {list(plan.outputs)}")
        if name in seen:
            raise _bad(f"output {name!r} is requested twice")
        seen.add(name)
        params = item.get("parameters")
        binary = binary_default
        if params is not None:  # the error messages are built only when needed
            if type(params) is not dict:
                raise _bad(f"output {name!r}: 'parameters' must be an object")
            if params.get("classification"):
                raise _bad(f"output {name!r}: the classification extension is not supported")
            if "shared_memory_region" in params:
                raise _bad(f"output {name!r}: the shared-memory extension is not supported")
            binary = _bool_param(params, "binary_data", f"output {name!r}", binary_default)
        out.append(RequestedOutput(name, binary))
    return out or list(plan.all_outputs[binary_default])


def parse_infer_request(
    body: bytes,
    manifest: Manifest,
    *,
    header_length: str | bytes | int | None = None,
    max_rows: int | None = None,
) -> InferRequest:
    """Validate a V2 infer request body against ``manifest``; return feeds ready to run.

    ``header_length`` is the ``Inference-Header-Content-Length`` header (``None`` when absent:
    the whole body is JSON); ``max_rows`` caps the batch dimension (``/predict``'s
    ``max_batch``). Raises :class:`BadRequestError` for anything malformed.
    """
    header, binary = _split_body(body, header_length)
    doc = _load_json(header)
    req_id = doc.get("id")
    if req_id is not None and not isinstance(req_id, str):
        raise _bad("'id' must be a string")
    params = _params(doc, "request")
    if params.get("sequence_id"):
        raise _bad("sequence_id: this model is stateless (no sequence batching)")
    timeout_s: float | None = None
    if "timeout" in params:
        t = params["timeout"]
        if type(t) is not int or t <= 0:
            raise _bad("parameter 'timeout' must be a positive integer (microseconds)")
        timeout_s = t / 1e6
    binary_default = _bool_param(params, "binary_data_output", "request", False)
    plan = plan_for(manifest)
    outputs = _parse_outputs(doc, plan, binary_default)
    feeds, rows = _parse_inputs(doc, binary, plan, max_rows)
    return InferRequest(
        feeds=feeds, rows=rows, outputs=outputs, id=req_id, timeout_s=timeout_s, parameters=params
    )

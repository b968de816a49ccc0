"""V2 inference requests -> validated :data:`~packserve.runtime.Feeds` (JSON and binary).

Everything a client can get wrong raises :class:`BadRequestError` (HTTP 400) before anything
is computed: JSON that is not JSON (NaN/Infinity literals included), unknown or missing
inputs, a datatype or shape the model does not take, ragged or mistyped ``data``, NaN/Inf in
JSON or binary floats, binary sizes that do not add up, invalid UTF-8 in ``BYTES``.

This module reads the request's structure (header split, JSON document, inputs, outputs,
parameters); the element values are decoded in :mod:`~packserve.serve.v2.arrays`, and the
per-manifest plan and request types live in :mod:`~packserve.serve.v2.plan`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from packserve.bundle import Manifest
from packserve.errors import BadRequestError, InputError
from packserve.runtime.inputs import Feeds
from packserve.serve.v2.arrays import from_binary, from_json
from packserve.serve.v2.images import image_input_blobs
from packserve.serve.v2.metadata import HEADER_LENGTH, WIRE
from packserve.serve.v2.plan import InferRequest, Plan, RequestedOutput, plan_for

__all__ = ["InferRequest", "RequestedOutput", "parse_infer_request", "plan_for"]


def _bad(message: str) -> BadRequestError:
    return BadRequestError(message)


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


def _no_shared_memory(item: Mapping[str, Any], where: str) -> None:
    if "shared_memory_region" in _params(item, where):
        raise _bad(f"{where}: the shared-memory extension is not supported")


def _binary_part(
    item: Mapping[str, Any], binary: memoryview, offset: int, where: str
) -> memoryview | None:
    """The input's slice of the binary part (``None``: its data is JSON)."""
    size = _params(item, where).get("binary_data_size")
    if size is None:
        return None
    if "data" in item:
        raise _bad(f"{where}: give either 'data' or binary_data_size, not both")
    if type(size) is not int or size < 0:
        raise _bad(f"{where}: binary_data_size must be a non-negative integer")
    if offset + size > len(binary):
        raise _bad(
            f"{where}: binary_data_size {size} runs past the end of the body "
            f"({len(binary) - offset} binary bytes left)"
        )
    return binary[offset : offset + size]


def _parse_inputs(
    doc: Mapping[str, Any], binary: memoryview, plan: Plan, max_rows: int | None
) -> tuple[Feeds, int, list[bytes] | None]:
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise _bad("'inputs' must be a non-empty list of tensors")
    specs = plan.inputs
    feeds: Feeds = {}
    images: list[bytes] | None = None
    offset = 0
    for i, item in enumerate(raw_inputs):
        if not isinstance(item, dict):
            raise _bad(f"inputs[{i}] must be an object")
        name = item.get("name")
        if not isinstance(name, str):
            raise _bad(f"inputs[{i}]: 'name' must be a string")
        where = f"input {name!r}"
        known = specs.get(name)
        if known is None and name != plan.image:
            takes = sorted(specs) if plan.image is None else [*sorted(specs), plan.image]
            raise _bad(f"unknown input {name!r}; the model takes {takes}")
        if name in feeds or (name == plan.image and images is not None):
            raise _bad(f"{where} is given twice")
        if known is None:  # the encoded images of an image bundle
            _no_shared_memory(item, where)
            part = _binary_part(item, binary, offset, where)
            offset += 0 if part is None else len(part)
            images = image_input_blobs(item, where, _shape_of(item, where), part, max_rows)
            continue
        datatype = item.get("datatype")
        if datatype not in WIRE:
            raise _bad(f"{where}: unknown datatype {str(datatype)[:20]!r}")
        assert isinstance(datatype, str)
        shape = _shape_of(item, where)
        _check_against_spec(where, datatype, shape, known[1], known[2], max_rows)
        _no_shared_memory(item, where)
        part = _binary_part(item, binary, offset, where)
        offset += 0 if part is None else len(part)
        mask = plan.missing.get(name)
        gaps = None if mask is None else (mask, known[0].features)
        if part is not None:
            arr = from_binary(part, datatype, shape, where, gaps)
        elif "data" in item:
            arr = from_json(item["data"], datatype, shape, where, gaps)
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
    if images is not None:
        if feeds:
            raise _bad(f"send either the encoded images ({plan.image!r}) or the preprocessed "
                       f"tensor {sorted(feeds)}, not both")
        return {}, len(images), images
    missing = [n for n in specs if n not in feeds]
    if missing:
        also = f" (or the encoded images as {plan.image!r})" if plan.image is not None else ""
        raise _bad(f"missing input(s) {missing}{also}")
    rows = {int(a.shape[0]) for a in feeds.values()}
    if len(rows) != 1:
        raise _bad(f"inputs disagree on the batch size: {sorted(rows)}")
    # Feed in the artifact's order (what concat_feeds and the runtime expect).
    return {n: feeds[n] for n in plan.order}, rows.pop(), None


def _parse_outputs(
    doc: Mapping[str, Any], plan: Plan, binary_default: bool
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
    feeds, rows, images = _parse_inputs(doc, binary, plan, max_rows)
    return InferRequest(
        feeds=feeds, rows=rows, outputs=outputs, id=req_id, timeout_s=timeout_s, parameters=params,
        images=images,
    )

"""The Open Inference Protocol ("V2", KServe / Triton) codec: bytes in, Feeds out, bytes back.

Pure functions over a bundle's :class:`~packserve.bundle.Manifest` and a
:class:`~packserve.runtime.Prediction`; no app, no I/O. Routes call :func:`parse_infer_request`,
hand ``request.feeds`` to the same ``infer`` as ``/predict`` (same batcher), then call
:func:`encode_infer_response`. Every malformed request raises :class:`BadRequestError` (HTTP 400)
*before* anything is computed. This module is the codec's public face and the response
encoder; requests are decoded in :mod:`~packserve.serve.v2.decode`, and the datatype tables and
metadata documents live in :mod:`~packserve.serve.v2.metadata`.

How a bundle looks through V2
-----------------------------
**Inputs** are the artifact's own input tensors (``manifest.inputs``), so a Triton client
sends exactly what ONNX Runtime receives: the chapter model has one ``input`` ``FP32
[-1, 15]``; a ColumnTransformer pipeline has one ``[-1, 1]`` tensor per column, ``BYTES`` for
string columns. ``-1`` is the batch dimension. The datatype must match exactly (as in
Triton): an ``FP64`` tensor for an ``FP32`` input is refused, not silently narrowed.

**Image bundles** (#17) also take their encoded images as one ``BYTES`` input (``image``,
shape ``[n]`` or ``[n, 1]``, one element per image: base64 strings in JSON, the file's bytes
with the binary extension), instead of the preprocessed tensor; see
:mod:`~packserve.serve.v2.images`. Model metadata lists both inputs.

**Outputs** carry the same content as ``/predict``:

* classifiers: ``label`` ``[-1]`` — the predicted label in the model's own label space
  (``BYTES`` for string labels, ``INT64`` for integer labels, ``BOOL`` / ``FP64`` for bool /
  float labels) — and ``probabilities`` ``FP64 [-1, k]`` with columns in the bundle's class
  order (``manifest.outputs.classes``, also in ``/predict``'s ``probabilities`` mapping);
* regressors: ``value`` ``FP64 [-1]`` (``[-1, m]`` for multi-output models).

Values are bit-identical to ``/predict``: the same postprocessed float64 arrays are encoded
(shortest round-trip decimal in JSON, little-endian IEEE 754 in binary).

Binary tensor extension
-----------------------
A request whose ``Inference-Header-Content-Length`` header is ``n`` has ``n`` bytes of JSON
followed by the raw tensors, in input order, of every input whose ``parameters`` carry
``binary_data_size``. Fixed-size types are little-endian, row-major; ``BOOL`` is one byte
(0 or 1); ``BYTES`` elements are a 4-byte little-endian length then the bytes. Outputs are
sent the same way when ``parameters.binary_data_output`` (request) or an output's
``parameters.binary_data`` says so; the response then carries the header too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from packserve.bundle import NAMED_OUTPUT_TASKS, Manifest
from packserve.runtime.prediction import Prediction
from packserve.serve.v2.decode import InferRequest, RequestedOutput, parse_infer_request, plan_for
from packserve.serve.v2.metadata import (
    HEADER_LENGTH,
    PROTOCOL_EXTENSIONS,
    U32,
    WIRE,
    TensorMeta,
    input_metadata,
    model_metadata,
    output_metadata,
    platform_of,
    server_metadata,
)

__all__ = [
    "HEADER_LENGTH",
    "PROTOCOL_EXTENSIONS",
    "EncodedResponse",
    "InferRequest",
    "RequestedOutput",
    "TensorMeta",
    "encode_infer_response",
    "input_metadata",
    "model_metadata",
    "output_metadata",
    "parse_infer_request",
    "platform_of",
    "prediction_tensors",
    "server_metadata",
]


def prediction_tensors(prediction: Prediction, manifest: Manifest) -> dict[str, tuple[str, np.ndarray]]:
    """``{output name: (datatype, array)}`` holding exactly what ``/predict`` reports."""
    if manifest.outputs.task in NAMED_OUTPUT_TASKS:
        assert prediction.outputs is not None
        metas = plan_for(manifest).outputs
        out: dict[str, tuple[str, np.ndarray]] = {}
        for name, arr in prediction.outputs.items():
            datatype = metas[name].datatype
            if datatype == "BYTES":
                out[name] = (datatype, np.asarray([str(v) for v in arr.reshape(-1).tolist()],
                                                  dtype=object).reshape(arr.shape))
            else:
                out[name] = (datatype, np.ascontiguousarray(arr, dtype=WIRE[datatype]))
        return out
    if manifest.outputs.task == "regression":
        assert prediction.values is not None
        return {"value": ("FP64", np.ascontiguousarray(prediction.values, dtype=np.float64))}
    assert prediction.labels is not None and prediction.probabilities is not None
    datatype = plan_for(manifest).outputs["label"].datatype
    labels = prediction.labels
    if datatype == "BYTES":
        labels = np.asarray([str(v) for v in labels.tolist()], dtype=object)
    else:
        labels = np.ascontiguousarray(labels, dtype=WIRE[datatype])
    probs = np.ascontiguousarray(prediction.probabilities, dtype=np.float64)
    return {"label": (datatype, labels), "probabilities": ("FP64", probs)}


def _to_wire(datatype: str, arr: np.ndarray) -> bytes:
    if datatype == "BYTES":
        parts: list[bytes] = []
        for s in arr.reshape(-1).tolist():
            b = s.encode("utf-8") if isinstance(s, str) else bytes(s)
            parts.append(U32.pack(len(b)))
            parts.append(b)
        return b"".join(parts)
    wire = WIRE[datatype]
    assert wire is not None
    return arr.astype(wire, copy=False).tobytes()


@dataclass(frozen=True, slots=True)
class EncodedResponse:
    body: bytes
    media_type: str
    headers: dict[str, str]


def encode_infer_response(
    prediction: Prediction,
    manifest: Manifest,
    request: InferRequest,
    *,
    model_name: str,
    model_version: str,
) -> EncodedResponse:
    """The V2 response body (JSON, or JSON + binary tensors) for ``request``'s outputs."""
    tensors = prediction_tensors(prediction, manifest)
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for want in request.outputs:
        datatype, arr = tensors[want.name]
        entry: dict[str, Any] = {"name": want.name, "datatype": datatype, "shape": list(arr.shape)}
        if want.binary:
            blob = _to_wire(datatype, arr)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif datatype == "BYTES":
            entry["data"] = arr.reshape(-1).tolist()
        else:
            entry["data"] = arr.reshape(-1)
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        doc["id"] = request.id
    doc["outputs"] = outputs
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return EncodedResponse(header, "application/json", {})
    return EncodedResponse(
        b"".join([header, *blobs]),
        "application/octet-stream",
        {HEADER_LENGTH: str(len(header))},
    )

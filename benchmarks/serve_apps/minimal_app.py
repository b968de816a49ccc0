"""Baseline (d) of ``bench_serve.py``: the least work any JSON server of this model must do.

Read the body, ``orjson.loads``, build the float32 array, one ONNX Runtime call (one intra-op
thread, no spinning: packserve's settings for this machine), ``orjson.dumps`` packserve's
response shape. No routing, no validation beyond what numpy refuses, no metrics, no error
handling: it would predict on ``"1.5"`` and ``true`` and answer a malformed body with a
crash. It is the *ceiling* the issue's targets are compared against: whatever packserve
does, it cannot beat this on the same uvicorn and the same model. Do not serve with it.

Model path from ``REFERENCE_MODEL`` (the bundle's ``model.onnx``, a binary classifier whose
outputs are label and probabilities, as packed from the chapter's XGBoost model).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
from benchmarks.serve_apps import lifespan, read_body

_so = ort.SessionOptions()
_so.intra_op_num_threads = 1
_so.inter_op_num_threads = 1
_so.add_session_config_entry("session.intra_op.allow_spinning", "0")
_session = ort.InferenceSession(
    os.environ.get("REFERENCE_MODEL", "model.onnx"), _so, providers=["CPUExecutionProvider"]
)
_INPUT = _session.get_inputs()[0].name
_OUTPUTS = [o.name for o in _session.get_outputs()]
_PROBS = next(i for i, o in enumerate(_session.get_outputs()) if "prob" in o.name)
VERSION = "1.0.0"


def _single(obj: Any) -> bytes:
    p = _session.run(_OUTPUTS, {_INPUT: np.asarray([obj["features"]], dtype=np.float32)})[_PROBS]
    row = p[0].tolist()
    label = int(row[1] > row[0])
    return orjson.dumps({"prediction": label, "probability": row[label],
                         "probabilities": {"0": row[0], "1": row[1]}, "model_version": VERSION})


def _batch(obj: Any) -> bytes:
    x = np.asarray([i["features"] for i in obj["instances"]], dtype=np.float32)
    rows = _session.run(_OUTPUTS, {_INPUT: x})[_PROBS].tolist()
    preds = []
    for r in rows:
        label = int(r[1] > r[0])
        preds.append({"prediction": label, "probability": r[label],
                      "probabilities": {"0": r[0], "1": r[1]}})
    return orjson.dumps({"predictions": preds, "batch_size": len(preds), "model_version": VERSION})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    body = await read_body(receive)
    if scope["path"] == "/predict":
        out = _single(orjson.loads(body))
    elif scope["path"] == "/predict/batch":
        out = _batch(orjson.loads(body))
    else:  # readiness probe of the benchmark
        out = b'{"status":"ok"}'
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})

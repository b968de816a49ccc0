"""The KServe Open Inference Protocol (V2): ``/v2/...`` routes over the same registry.

``decode`` turns a request (JSON or binary tensor data) into feeds, with ``arrays`` decoding
the tensor values and ``plan`` the per-manifest plan and request types; ``codec`` encodes
responses, ``metadata`` holds the datatype tables and model/server metadata, and ``routes`` is
the HTTP surface (FastAPI router plus the hot ``infer`` endpoint the gateway dispatches to).
"""

from __future__ import annotations

from packserve.serve.v2.codec import EncodedResponse, encode_infer_response, prediction_tensors
from packserve.serve.v2.decode import InferRequest, RequestedOutput, parse_infer_request
from packserve.serve.v2.routes import (
    INFER_ROUTES,
    InferEndpoint,
    infer_body,
    repository_for,
    v2_router,
)

__all__ = [
    "INFER_ROUTES",
    "EncodedResponse",
    "InferEndpoint",
    "InferRequest",
    "RequestedOutput",
    "encode_infer_response",
    "infer_body",
    "parse_infer_request",
    "prediction_tensors",
    "repository_for",
    "v2_router",
]

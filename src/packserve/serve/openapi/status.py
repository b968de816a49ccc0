"""Every status an operation can answer, listed in the OpenAPI document.

FastAPI documents what a route's own signature implies (200, 422). The gateway in front of
the routes adds answers of its own — 401 without the key, 503 while draining or overloaded,
413 for a body over the limit — and some routes raise more (404 for an unknown model, 400 for
a malformed V2 request, 504 for a passed deadline). A client generator or a contract test
(schemathesis) reads the document as the truth, so the document lists them all; the test
suite checks it against a real server (``tests/serve/test_openapi_contract.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["document_statuses"]

_ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
_V2_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}},
    "required": ["error"],
    "title": "V2ErrorBody",
}
_BODY_METHODS = frozenset({"post", "put", "patch"})
_INFER_SUFFIXES = ("/infer", "/predict", "/predict/batch")


def _statuses(path: str, method: str, *, keyed: bool, drained: bool) -> dict[str, str]:
    out: dict[str, str] = {}
    if keyed:
        out["401"] = "missing or wrong API key"
    if drained:
        out["503"] = "the server is shutting down or overloaded (Retry-After says when to retry)"
    if method in _BODY_METHODS:
        out["413"] = "body too large"
    if "{" in path:
        out["404"] = "unknown model or version"
    if path.startswith("/v2/"):
        out["400"] = "malformed request (the protocol's error shape)"
        if path.startswith("/v2/repository/"):
            out["404"] = "unknown model, or the repository extension is disabled"
    if path.endswith(_INFER_SUFFIXES):
        out["503"] = "model not ready, overloaded, or the server is shutting down (Retry-After)"
        out["504"] = "the request's deadline passed before it was computed"
    return out


def document_statuses(
    doc: dict[str, Any], *, needs_key: Callable[[str], bool], drains: Callable[[str], bool]
) -> None:
    """Add the answers the gateway and the routes give to every operation of ``doc``
    (in place; statuses already documented are kept as they are)."""
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            responses: dict[str, Any] = op["responses"]
            schema = _V2_ERROR if path == "/v2" or path.startswith("/v2/") else _ERROR_REF
            for code, text in _statuses(path, method, keyed=needs_key(path), drained=drains(path)).items():
                responses.setdefault(
                    code, {"description": text, "content": {"application/json": {"schema": schema}}}
                )

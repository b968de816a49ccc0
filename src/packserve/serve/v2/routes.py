"""Open Inference Protocol (KServe / Triton "V2") REST endpoints.

Health, server and model metadata, readiness and inference follow the protocol; inference
validates with :mod:`packserve.serve.v2.codec` and computes through ``ModelHandle.infer``, the
same entry point (and so the same batcher, metrics and limits) as ``/predict``. Errors are
raised as :class:`~packserve.errors.PackserveError` and mapped by the app's single handler,
which answers ``/v2`` paths in the protocol's ``{"error": "..."}`` shape.

Health answers follow the protocol text and Triton: ``200`` for true, ``400`` for false (a
4xx "indicates false"); an unknown model is ``404``. The repository extension
(``/v2/repository/...``) exists only when ``repository_api`` is enabled, which requires an
API key (checked by the app's gateway like every other non-health path).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.types import Receive

from packserve import __version__
from packserve.errors import (
    BadRequestError,
    PayloadTooLargeError,
    RouteNotFoundError,
    UnsupportedMediaTypeError,
)
from packserve.serve.endpoint import Endpoint
from packserve.serve.http import (
    INTERNAL_ERROR_BODY_V2,
    Headers,
    read_body,
)
from packserve.serve.registry import ModelHandle, ModelRegistry
from packserve.serve.repository import ModelRepository
from packserve.serve.routes import readiness
from packserve.serve.v2 import codec
from packserve.serve.v2.images import image_feeds
from packserve.serve.v2.plan import plan_for

__all__ = ["INFER_ROUTES", "InferEndpoint", "infer_body", "repository_for", "v2_router"]

log = logging.getLogger("packserve.serve")

v2_router = APIRouter(prefix="/v2", tags=["v2 (Open Inference Protocol)"])


def _json(body: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status_code, media_type="application/json")


def _registry(request: Request) -> ModelRegistry:
    reg: ModelRegistry = request.app.state.registry
    return reg


def repository_for(app: Any) -> ModelRepository:
    """The app's :class:`ModelRepository` (one per app, created on first use)."""
    repo: ModelRepository | None = getattr(app.state, "v2_repository", None)
    if repo is None:
        settings = app.state.settings
        metrics = getattr(app.state, "metrics", None)
        repo = ModelRepository(
            app.state.registry,
            settings.model_path,
            drain_timeout_s=settings.drain_timeout_s,
            metrics_registry=None if metrics is None else metrics.registry,
        )
        app.state.v2_repository = repo
    return repo


def _repository_api(request: Request) -> bool:
    return bool(getattr(request.app.state.settings, "repository_api", False))


# --- health and metadata ---------------------------------------------------------------------


@v2_router.get("", summary="Server metadata: name, version, protocol extensions")
async def server_metadata(request: Request) -> Response:
    extensions = list(codec.PROTOCOL_EXTENSIONS)
    if _repository_api(request):
        extensions.append("model_repository")
    return _json(codec.server_metadata(__version__, extensions))


@v2_router.get("/health/live", summary="Liveness: 200 while the process runs")
async def health_live() -> Response:
    return _json({"live": True})


@v2_router.get("/health/ready", summary="Readiness: 200 when ready, 400 (protocol: 4xx = false) when not")
async def health_ready(request: Request) -> Response:
    ok, _, _ = readiness(_registry(request), request.app.state.serving)
    return _json({"ready": ok}, 200 if ok else 400)


def _versions(registry: ModelRegistry, name: str) -> list[str]:
    return [h.version for h in registry.versions(name) if h.ready]


@v2_router.get("/models/{name}", summary="Model metadata (the version that serves by default)")
async def model_metadata(name: str, request: Request) -> Response:
    return await _metadata(_registry(request), name, None)


@v2_router.get("/models/{name}/versions/{version}", summary="Model metadata of one version")
async def model_version_metadata(name: str, version: str, request: Request) -> Response:
    return await _metadata(_registry(request), name, version)


_VALUE_WIDTH: weakref.WeakKeyDictionary[ModelHandle, int | None] = weakref.WeakKeyDictionary()


async def _value_width(handle: ModelHandle) -> int | None:
    """Columns of a multi-output regressor's ``value`` (``None``: one value per row).

    The manifest does not record it, so one warm-up prediction per version says (in a thread:
    the model may be slow), remembered for the handle's lifetime."""
    if handle in _VALUE_WIDTH:
        return _VALUE_WIDTH[handle]
    predictor = handle.predictor
    if predictor is None:
        return None
    values = (await asyncio.to_thread(predictor.warmup)).values
    width = int(values.shape[1]) if values is not None and values.ndim == 2 else None
    _VALUE_WIDTH[handle] = width
    return width


async def _metadata(registry: ModelRegistry, name: str, version: str | None) -> Response:
    handle = registry.resolve(name, version)
    m = handle.manifest
    assert m is not None
    width = await _value_width(handle) if m.task == "regression" else None
    versions = _versions(registry, name)
    return _json(codec.model_metadata(m, name=handle.name, versions=versions, value_width=width))


@v2_router.get("/models/{name}/ready", summary="Model readiness: 200 / 400; 404 for an unknown model")
async def model_ready(name: str, request: Request) -> Response:
    return _ready(_registry(request), name, None)


@v2_router.get("/models/{name}/versions/{version}/ready", summary="Readiness of one model version")
async def model_version_ready(name: str, version: str, request: Request) -> Response:
    return _ready(_registry(request), name, version)


def _ready(registry: ModelRegistry, name: str, version: str | None) -> Response:
    handle = registry.get(name, version)
    return _json({"name": name, "ready": handle.ready}, 200 if handle.ready else 400)


# --- inference -------------------------------------------------------------------------------


def _decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding: gzip | deflate`` (tritonclient's request compression),
    refusing a body that inflates past the size limit (a decompression bomb)."""
    if encoding is None or encoding.strip().lower() in ("", "identity"):
        return body
    enc = encoding.strip().lower()
    if enc not in ("gzip", "deflate"):
        raise UnsupportedMediaTypeError(f"unsupported Content-Encoding {enc[:20]!r} (gzip, deflate)")
    d = zlib.decompressobj(wbits=31 if enc == "gzip" else 15)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error:
        raise BadRequestError(f"body is not valid {enc} data") from None
    if len(out) > limit or d.unconsumed_tail:
        raise PayloadTooLargeError(f"decompressed body exceeds the limit of {limit} bytes")
    if not d.eof:
        raise BadRequestError(f"body is truncated {enc} data")
    return out


async def infer_body(
    handle: ModelHandle,
    read: Callable[[], Awaitable[bytes]],
    *,
    header_length: str | bytes | None,
    content_encoding: str | bytes | None,
    limit: int,
    deadline: float | None = None,
) -> codec.EncodedResponse:
    """The one V2 inference path: read, decode, validate, ``handle.infer``, encode.

    The caller holds the handle (``in_flight``) from routing on, body reading included: an
    unload waits for this request, and it finishes on the version it was routed to even if a
    newer version is swapped in meanwhile.
    """
    assert handle.manifest is not None
    if isinstance(content_encoding, bytes):
        content_encoding = content_encoding.decode("latin-1")
    body = _decompress(await read(), content_encoding, limit)
    req = codec.parse_infer_request(
        body, handle.manifest, header_length=header_length, max_rows=handle.max_batch
    )
    if req.timeout_s is not None:  # the protocol's parameters.timeout; the earlier wins
        asked = time.monotonic() + req.timeout_s
        deadline = asked if deadline is None else min(deadline, asked)
    if req.images is not None:  # an image bundle's encoded images: decoded off the loop
        name = plan_for(handle.manifest).image
        assert handle.images is not None and name is not None
        req.feeds = await image_feeds(handle.images, req.images, name)
    prediction = await handle.infer(req.feeds, deadline=deadline)
    return codec.encode_infer_response(
        prediction, handle.manifest, req, model_name=handle.name, model_version=handle.version
    )


#: (path template, batch?) of the V2 inference paths, for the gateway's route table
INFER_ROUTES: tuple[tuple[str, bool], ...] = (
    ("/v2/models/{name}/infer", False),
    ("/v2/models/{name}/versions/{version}/infer", False),
)


class InferEndpoint(Endpoint):
    """V2 inference at the ASGI level, like ``/predict`` (no per-request FastAPI machinery:
    it costs more than validating and running a small model); the shared skeleton is
    :mod:`~packserve.serve.endpoint`."""

    routes = INFER_ROUTES
    v2 = True
    internal_error = INTERNAL_ERROR_BODY_V2

    async def answer(
        self, handle: ModelHandle, headers: dict[bytes, bytes], receive: Receive, batch: bool,
        deadline: float | None,
    ) -> tuple[bytes, Headers]:
        enc = await infer_body(
            handle,
            lambda: read_body(receive, headers, self.max_body_bytes),
            header_length=headers.get(b"inference-header-content-length"),
            content_encoding=headers.get(b"content-encoding"),
            limit=self.max_body_bytes,
            deadline=deadline,
        )
        raw: Headers = [(b"content-type", enc.media_type.encode())]
        raw.extend((k.lower().encode(), v.encode()) for k, v in enc.headers.items())
        return enc.body, raw


# The app's gateway serves these paths with InferEndpoint; the FastAPI routes below describe
# them in OpenAPI and serve them when the app is mounted without the gateway.


async def _infer(request: Request, name: str, version: str | None) -> Response:
    handle = _registry(request).resolve(name, version)
    handle.in_flight += 1  # held from routing on, as the gateway's Endpoint does
    try:
        enc = await infer_body(
            handle,
            request.body,
            header_length=request.headers.get(codec.HEADER_LENGTH),
            content_encoding=request.headers.get("content-encoding"),
            limit=request.app.state.settings.max_body_bytes,
        )
    finally:
        handle.in_flight -= 1
    return Response(enc.body, media_type=enc.media_type, headers=enc.headers)


@v2_router.post("/models/{name}/infer", summary="Inference (JSON or binary tensor extension)")
async def infer(name: str, request: Request) -> Response:
    return await _infer(request, name, None)


@v2_router.post("/models/{name}/versions/{version}/infer", summary="Inference on one model version")
async def infer_version(name: str, version: str, request: Request) -> Response:
    return await _infer(request, name, version)


# --- repository extension --------------------------------------------------------------------


async def _optional_json(request: Request) -> dict[str, Any]:
    body = await request.body()
    if not body.strip():
        return {}
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequestError("request body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise BadRequestError("request body must be a JSON object")
    return doc


def _repository(request: Request) -> ModelRepository:
    if not _repository_api(request):
        raise RouteNotFoundError(
            "the model repository extension is disabled (enable it with --repository-api; "
            "it requires an API key)"
        )
    return repository_for(request.app)


@v2_router.post("/repository/index", summary="Every model version in the repository and its state")
async def repository_index(request: Request) -> Response:
    repo = _repository(request)
    doc = await _optional_json(request)
    ready = doc.get("ready", False)
    if not isinstance(ready, bool):
        raise BadRequestError("'ready' must be true or false")
    return _json([e.to_dict() for e in repo.index(ready_only=ready)])


@v2_router.post("/repository/models/{name}/load", summary="Load new versions beside the serving one")
async def repository_load(name: str, request: Request) -> Response:
    repo = _repository(request)
    doc = await _optional_json(request)
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequestError("'parameters' must be an object")
    overrides = sorted(k for k in params if k == "config" or k.startswith("file:"))
    if overrides:
        raise BadRequestError(f"load overrides {overrides} are not supported: bundles are immutable")
    report = await repo.load(name)
    return _json({"name": name, "loaded": report.loaded, "serving": report.serving})


@v2_router.post(
    "/repository/models/{name}/unload", summary="Unload every version once in-flight work is done"
)
async def repository_unload(name: str, request: Request) -> Response:
    repo = _repository(request)
    await _optional_json(request)
    versions = await repo.unload(name)
    return _json({"name": name, "unloaded": versions})


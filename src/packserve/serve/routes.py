"""Regular FastAPI routes: health, model listing, metrics.

These are not on the hot path, so they use ordinary FastAPI routes with response models
(they appear in OpenAPI as usual). Errors raised here go through the app's one exception
handler (``PackserveError -> http_status + to_dict()``).
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from packserve.errors import ModelNotFoundError
from packserve.serve.metrics import Metrics
from packserve.serve.openapi import ErrorBody
from packserve.serve.registry import ModelRegistry
from packserve.serve.state import ServerState


class HealthResponse(BaseModel):
    """The chapter's health shape."""

    status: str = Field(description="healthy | loading | unavailable | draining")
    model_loaded: bool
    model_version: str


class ModelStateItem(BaseModel):
    name: str
    version: str
    state: str
    error: str | None = None


class SignaturePolicy(BaseModel):
    enforced: bool = Field(description="only bundles signed by a trusted key are served (--trusted-key)")
    trusted: list[str] | None = Field(default=None, description="fingerprints of the trusted keys / CAs")


class ReadinessResponse(BaseModel):
    status: str = Field(description="ready | loading | failed | draining")
    models: list[ModelStateItem]
    signatures: SignaturePolicy


class ModelInfo(BaseModel):
    name: str
    version: str
    state: str
    task: str | None = None
    features: list[str] | None = None
    framework: str | None = None
    classes: list[int | str | float | bool] | None = None
    signed_by: str | None = Field(default=None, description="the trusted key that verified it")
    error: str | None = None


class ModelsResponse(BaseModel):
    default_model: str | None
    models: list[ModelInfo]


def _registry(request: Request) -> ModelRegistry:
    reg: ModelRegistry = request.app.state.registry
    return reg


def _state(request: Request) -> ServerState:
    st: ServerState = request.app.state.serving
    return st


def readiness(registry: ModelRegistry, state: ServerState) -> tuple[bool, str, dict[str, Any]]:
    ok, detail = registry.readiness()
    if state.draining:
        return False, "draining", detail
    if ok:
        return True, "ready", detail
    if not state.loading_done:
        return False, "loading", detail
    return False, "failed", detail


def _json(body: dict[str, Any], status_code: int) -> Response:
    return Response(orjson.dumps(body), status_code=status_code, media_type="application/json")


health_router = APIRouter(tags=["health"])


@health_router.get("/health/live", summary="Liveness: 200 while the process runs")
async def live() -> dict[str, str]:
    return {"status": "alive"}


@health_router.get(
    "/health/ready",
    response_model=ReadinessResponse,
    summary="Readiness: 200 once every model is verified and warm; 503 before and while draining",
    responses={503: {"model": ReadinessResponse}},
)
async def ready(request: Request) -> Response:
    ok, status, detail = readiness(_registry(request), _state(request))
    return _json({"status": status, **detail}, status_code=200 if ok else 503)


@health_router.get(
    "/health",
    response_model=HealthResponse,
    summary="The chapter's health check (status, model_loaded, model_version)",
    responses={503: {"model": HealthResponse}},
)
async def health(request: Request) -> Response:
    registry = _registry(request)
    ok, status, _ = readiness(registry, _state(request))
    try:
        handle = registry.get(registry.default_name())
        loaded, version = handle.ready, handle.version
    except ModelNotFoundError:
        loaded = any(h.ready for h in registry.handles())
        version = "unknown"
    body = {"status": "healthy" if ok else status, "model_loaded": loaded, "model_version": version}
    return _json(body, status_code=200 if ok else 503)


models_router = APIRouter(tags=["models"])


@models_router.get("/models", response_model=ModelsResponse, summary="Served models and their state")
async def list_models(request: Request) -> ModelsResponse:
    registry = _registry(request)
    try:
        default: str | None = registry.default_name()
    except ModelNotFoundError:
        default = None
    items = [ModelInfo(**h.describe()) for h in registry.handles()]
    return ModelsResponse(default_model=default, models=items)


@models_router.get(
    "/models/{name}",
    response_model=list[ModelInfo],
    summary="Versions of one model",
    responses={404: {"model": ErrorBody}},
)
async def model_versions(name: str, request: Request) -> list[ModelInfo]:
    return [ModelInfo(**h.describe()) for h in _registry(request).versions(name)]


metrics_router = APIRouter(tags=["metrics"])


@metrics_router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
async def metrics(request: Request) -> Response:
    m: Metrics = request.app.state.metrics
    return Response(m.render(), media_type=m.content_type)


__all__ = ["health_router", "metrics_router", "models_router", "readiness"]

"""The app factory: ``create_app(settings) -> PackserveApp`` (a FastAPI subclass).

:class:`PackserveApp` puts a thin gateway in front of FastAPI's stack. For every HTTP request
it runs a few small steps (parts in :mod:`packserve.serve.gateway`): count the request in
flight (drain); refuse it while draining or without the API key (:meth:`PackserveApp.refusal`);
serve the raw inference paths of its one :class:`~packserve.serve.gateway.RouteTable`
(``/predict...`` and V2 ``infer``, :mod:`packserve.serve.endpoint`); cap bodies for the
other routes; record metrics and the access log. Everything else — health, ``/models``,
``/metrics``, ``/docs``, and routers other layers add (``ROUTERS``, or
``app.include_router`` on the returned app) — is plain FastAPI.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from packserve import __version__
from packserve.errors import (
    InputError,
    MethodNotAllowedError,
    PackserveError,
    RouteNotFoundError,
    ShuttingDownError,
    UnauthorizedError,
)
from packserve.runtime import RuntimeOptions
from packserve.serve.admission import Admission
from packserve.serve.door import Door
from packserve.serve.gateway import BODY_METHODS, RouteTable, TrackedSend, body_limit, log_access
from packserve.serve.http import (
    INTERNAL_ERROR_BODY,
    INTERNAL_ERROR_BODY_V2,
    api_key_ok,
    error_response,
    header_map,
    is_v2_path,
    send_error,
)
from packserve.serve.metrics import Metrics
from packserve.serve.openapi import (
    DOCS_CHALLENGES,
    SECURITY_SCHEMES,
    docs_router,
    document_statuses,
    is_docs_surface,
    prediction_openapi,
)
from packserve.serve.predict import PredictEndpoint
from packserve.serve.registry import ModelRegistry
from packserve.serve.routes import health_router, metrics_router, models_router
from packserve.serve.settings import ServeSettings
from packserve.serve.state import ServerState, lifespan_context
from packserve.serve.v2 import InferEndpoint, v2_router

log = logging.getLogger("packserve.serve")
access_log = logging.getLogger("packserve.access")

#: Routers every app includes. Other layers (V2...) append theirs here.
ROUTERS: list[Callable[[], APIRouter]] = [
    lambda: health_router,
    lambda: models_router,
    lambda: metrics_router,
    lambda: v2_router,
]

#: Paths that never need the API key and are answered while draining: health, for probes and
#: load balancers that cannot hold a key. (/metrics: open unless ``metrics_auth``; the docs
#: surface: see :func:`packserve.serve.openapi.docs.is_docs_surface`.)
OPEN_PATHS = frozenset({"/health"})
OPEN_PREFIXES = ("/health/", "/v2/health/")


class PackserveApp(FastAPI):
    """FastAPI plus packserve's gateway (see module docstring)."""

    serving: ServerState
    registry: ModelRegistry
    metrics: Metrics
    settings: ServeSettings

    def setup_packserve(
        self, settings: ServeSettings, registry: ModelRegistry, state: ServerState, metrics: Metrics
    ) -> None:
        self.settings, self.registry, self.serving, self.metrics = settings, registry, state, metrics
        self.state.settings, self.state.registry = settings, registry
        self.state.serving, self.state.metrics = state, metrics
        key = settings.api_key
        self._key = key.get_secret_value().encode() if key is not None else None
        self.admission = Admission(
            budget_ms=settings.admission_budget_ms, max_in_flight=settings.max_in_flight,
            parallelism=settings.resolved_inference_threads(), timeout_ms=settings.timeout_ms,
            metrics_registry=metrics.registry,
        )
        limit, draining, admission = settings.max_body_bytes, lambda: state.draining, self.admission
        self.route_table = RouteTable(
            endpoint(registry, max_body_bytes=limit, draining=draining, admission=admission,
                     keep_small_refusals=True, drain_small_refusals=settings.server == "granian")
            for endpoint in (PredictEndpoint, InferEndpoint)
        )
        self._limit = settings.max_body_bytes
        self._access = settings.access_log
        #: admission's refusals at the engine's door (uvicorn: serve/engines/uvicorn_door.py);
        #: None when the ASGI path must see every request (the access log lines)
        self.door = None if settings.access_log or not settings.admission_door else Door(
            self.route_table, observe=metrics.observe_request, draining=draining,
            authorized=None if self._key is None else self._authorized, pressed=self.admission.pressed,
            rounds=self.admission.quota.rounds,
        )
        self._openapi_gen = -1
        self._static: frozenset[str] | None = None
        self._static_n = 0
        self._openapi_doc: dict[str, Any] | None = None
        metrics.in_flight.set_function(lambda: float(state.in_flight))
        metrics.draining.set_function(lambda: 1.0 if state.draining else 0.0)

    def static_paths(self) -> frozenset[str]:
        """Parameter-free paths of plain Starlette routes (/openapi.json, /docs) for metrics."""
        if self._static is None or len(self.routes) != self._static_n:
            self._static_n = len(self.routes)
            self._static = frozenset(
                p for r in self.routes if "{" not in (p := getattr(r, "path", "{"))
            )
        return self._static

    def is_open(self, path: str) -> bool:
        return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)

    def needs_key(self, path: str) -> bool:
        if self._key is None or self.is_open(path):
            return False
        if is_docs_surface(path):
            return not self.settings.public_docs
        return path != "/metrics" or self.settings.metrics_auth

    def _authorized(self, path: str, headers: Sequence[tuple[bytes, bytes]]) -> bool:
        """The API key checks out for ``path`` (or none is needed): the door's question."""
        if self._key is None or not self.needs_key(path):
            return True
        return api_key_ok(dict(headers), self._key, basic=is_docs_surface(path))

    def refusal(self, scope: Scope, path: str) -> PackserveError | None:
        """Draining (503, but health, docs and metrics still answer), then the API key (401)."""
        if self.serving.draining and not (self.is_open(path) or path == "/metrics"):
            return ShuttingDownError("the server is shutting down", retry_after_s=1)
        if self._key is not None and self.needs_key(path):
            docs = is_docs_surface(path)
            if not api_key_ok(header_map(scope), self._key, basic=docs):
                return UnauthorizedError(
                    "missing or invalid API key", challenges=DOCS_CHALLENGES if docs else ("Bearer",)
                )
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        state = self.serving
        t0 = time.perf_counter()
        state.in_flight += 1
        path: str = scope["path"]
        hit = self.route_table.match(path)
        route = "unmatched" if hit is None else hit[0].template
        status = 0
        tracked: TrackedSend | None = None
        try:
            refused = self.refusal(scope, path)
            if refused is None and hit is not None:  # the hot path: the endpoint sends itself
                target, name, version = hit
                status = await target.endpoint(scope, receive, send, name, version, target.batch)
                return
            tracked = TrackedSend(send, state)
            if refused is None:
                receive, refused = body_limit(scope, receive, self._limit)
            if refused is not None:
                tracked.close = scope["method"] in BODY_METHODS  # its body stays unread
                await send_error(tracked, refused, v2=is_v2_path(path))
                return
            await super().__call__(scope, receive, tracked)
            r = scope.get("route")
            route = getattr(r, "path", None) or (path if path in self.static_paths() else route)
        finally:
            state.in_flight -= 1
            if tracked is not None:
                status = tracked.status
            dt = time.perf_counter() - t0
            self.metrics.observe_request(route, scope["method"], status or 500, dt)
            if self._access:
                log_access(scope, route, status or 500, dt)

    def openapi(self) -> dict[str, Any]:
        """FastAPI's schema for the regular routes + exact per-model prediction paths."""
        gen = self.registry.generation
        if self._openapi_gen == gen and self._openapi_doc is not None:
            return self._openapi_doc
        self.openapi_schema = None
        doc = copy.deepcopy(super().openapi())
        secured = self._key is not None
        paths, schemas = prediction_openapi(
            self.registry, secured=secured, example_rows=self.settings.example_rows)
        doc["paths"] = {**paths, **doc.get("paths", {})}
        components = doc.setdefault("components", {})
        components.setdefault("schemas", {}).update(schemas)
        if secured:
            components["securitySchemes"] = SECURITY_SCHEMES
            for p, item in doc["paths"].items():
                if self.needs_key(p):
                    for op in item.values():
                        op.setdefault("security", [{"bearerAuth": []}, {"apiKeyHeader": []}])
        document_statuses(doc, needs_key=self.needs_key,
                          drains=lambda p: not (self.is_open(p) or p == "/metrics"))
        self._openapi_doc = doc
        self._openapi_gen = gen
        return doc


def install_error_handlers(app: FastAPI) -> None:
    """Route every error of every router through :func:`error_response` (one mapping);
    ``/v2`` paths get the protocol's body shape from that same mapping."""

    async def on_packserve(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PackserveError)
        return error_response(exc, v2=is_v2_path(request.url.path))

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        # Never echo the input (it may hold NaN, huge strings...): message + location only.
        v2 = is_v2_path(request.url.path)
        return error_response(InputError(str(first.get("msg", "invalid request")), where=loc), v2=v2)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        v2 = is_v2_path(request.url.path)
        if exc.status_code == 404:
            return error_response(RouteNotFoundError("no such endpoint"), v2=v2)
        if exc.status_code == 405:
            allow = tuple((exc.headers or {}).get("Allow", "GET").split(", "))
            return error_response(MethodNotAllowedError("method not allowed here", allow=allow), v2=v2)
        err = PackserveError(exc.detail if isinstance(exc.detail, str) else "request failed")
        err.http_status = exc.status_code
        err.code = "http_error"
        return error_response(err, v2=v2)

    async def on_crash(request: Request, exc: Exception) -> Response:
        log.error("unhandled error", exc_info=exc)
        body = INTERNAL_ERROR_BODY_V2 if is_v2_path(request.url.path) else INTERNAL_ERROR_BODY
        return Response(body, status_code=500, media_type="application/json")

    app.add_exception_handler(PackserveError, on_packserve)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_crash)


def create_app(
    settings: ServeSettings | None = None, *, registry: ModelRegistry | None = None
) -> PackserveApp:
    """Build the app. Bundles are *discovered* here (a missing or malformed bundle raises
    now, with the CLI exit code); they are verified, loaded and warmed in the lifespan."""
    settings = settings or ServeSettings()
    executor = ThreadPoolExecutor(
        max_workers=settings.resolved_inference_threads(), thread_name_prefix="packserve-infer"
    )
    metrics = Metrics()
    if registry is None:
        from packserve.signing import load_trust_anchors

        registry = ModelRegistry(
            trusted=load_trust_anchors(settings.trusted_keys),  # a bad key file: exit 2, now
            executor=executor,
            runtime_options=RuntimeOptions(intra_op_threads=settings.resolved_intra_op_threads()),
            max_batch=settings.max_batch,
            inline_max_s=settings.inline_max_ms / 1000.0,
            default_model=settings.default_model,
            require_all=settings.require_all_models,
            keep_versions=settings.keep_versions,
        )
    registry.observer = metrics.observe_inference
    registry.on_state.append(metrics.set_model_state)
    registry.on_refused.append(metrics.observe_refusal)
    metrics.set_signature_policy(len(registry.trusted))
    if registry.trusted:
        log.info("signatures enforced: only bundles signed by %s are served",
                 ", ".join(a.label for a in registry.trusted))
    else:
        log.info("signatures are not enforced (no --trusted-key): bundles are checked by sha256 only")
    if settings.model_path is not None:
        registry.add_path(settings.model_path)
    state = ServerState()
    app = PackserveApp(
        title="packserve",
        version=__version__,
        description="Prediction API over packserve bundles.",
        docs_url=None,  # FastAPI's pages load from a CDN: serve/openapi/docs.py serves them offline
        redoc_url=None,
        lifespan=lambda _app: lifespan_context(registry, state, executor),
    )
    app.setup_packserve(settings, registry, state, metrics)
    if settings.coalesce:  # the previous loop pass started several requests: they arrive together
        clock = app.admission.clock
        registry.busy = lambda: clock.last_count > 1
    if settings.batching or settings.model_batching:
        from packserve.serve.batching import install_batching

        app.state.batchers = batchers = install_batching(registry, settings, metrics.registry)
        state.on_drain.append(batchers.drain_all)
    for make_router in ROUTERS:
        app.include_router(make_router())
    app.include_router(docs_router())
    install_error_handlers(app)
    if settings.repository_poll_s > 0:
        from packserve.serve.v2 import repository_for

        repo = repository_for(app)
        state.after_load.append(lambda: repo.start_polling(settings.repository_poll_s))
        state.on_shutdown.append(repo.stop)
    return app


__all__ = ["OPEN_PATHS", "OPEN_PREFIXES", "ROUTERS", "PackserveApp", "create_app", "install_error_handlers"]

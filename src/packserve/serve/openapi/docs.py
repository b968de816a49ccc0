"""``/docs`` (Swagger UI) and ``/redoc`` served entirely by packserve: no CDN, works offline.

FastAPI's own doc pages load Swagger UI and ReDoc from a CDN, so on a server without internet
(data centres, air-gapped clusters) they are blank. The JavaScript/CSS come from the
``fastapi-offline`` package on the registry (maintained; ships Swagger UI 5, which renders
the OpenAPI 3.1 document FastAPI produces, and ReDoc 2). We use only its static files, located
without importing it, and serve them under a versioned path so browsers may cache them for
good. ``swagger-ui-bundle`` was the other candidate: its last release ships Swagger UI 4.15,
which refuses OpenAPI 3.1 documents, and it has no ReDoc.

Pages carry a Content-Security-Policy that allows this origin only, so the browser itself
would refuse anything a future asset tried to fetch from elsewhere.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, Response

from packserve.errors import RouteNotFoundError

ASSET_PACKAGE = "fastapi-offline"
DOCS_PATH = "/docs"
REDOC_PATH = "/redoc"
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"
ASSETS_PREFIX = "/docs/assets/"
OPENAPI_PATH = "/openapi.json"

#: The files the pages use, with their media types (anything else under the prefix is a 404).
ASSETS: dict[str, str] = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}

#: 'self' only: the pages, their scripts and the spec all come from this server. Swagger UI
#: and ReDoc need inline scripts/styles (their bootstrap) and blob: workers (ReDoc's search).
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
    "frame-ancestors 'self'; base-uri 'self'; form-action 'self'"
)


@functools.cache
def assets_dir() -> Path:
    """The package's static folder (found by its spec: importing it would build a FastAPI app)."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:  # pragma: no cover - a core dependency
        raise RuntimeError(f"{ASSET_PACKAGE} is not installed: pip install {ASSET_PACKAGE}")
    return Path(spec.origin).parent / "static"


@functools.cache
def assets_version() -> str:
    """Part of every asset URL, so a new package version is a new URL (cache forever)."""
    try:
        return importlib.metadata.version(ASSET_PACKAGE)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        return "0"


@functools.cache
def _asset_bytes(name: str) -> bytes:
    return (assets_dir() / name).read_bytes()


def asset_url(name: str, root_path: str = "") -> str:
    return f"{root_path}{ASSETS_PREFIX}{assets_version()}/{name}"


def _page(html: HTMLResponse) -> HTMLResponse:
    html.headers["content-security-policy"] = CSP
    html.headers["cache-control"] = "no-cache"
    html.headers["x-content-type-options"] = "nosniff"
    return html


def docs_router(openapi_url: str = OPENAPI_PATH, title: str = "packserve") -> APIRouter:
    """The doc pages and their assets (all ``include_in_schema=False``: the OpenAPI document
    stays exactly what it was)."""
    router = APIRouter(include_in_schema=False)

    def root(request: Request) -> str:  # behind a proxy that mounts us under a prefix
        return str(request.scope.get("root_path", "")).rstrip("/")

    @router.get(DOCS_PATH)
    async def swagger_ui(request: Request) -> HTMLResponse:
        r = root(request)
        return _page(get_swagger_ui_html(
            openapi_url=r + openapi_url,
            title=f"{title} - Swagger UI",
            oauth2_redirect_url=r + OAUTH2_REDIRECT_PATH,
            swagger_js_url=asset_url("swagger-ui-bundle.js", r),
            swagger_css_url=asset_url("swagger-ui.css", r),
            swagger_favicon_url=asset_url("favicon.png", r),
            # keep an entered API key across reloads of the page (browser storage only)
            swagger_ui_parameters={"persistAuthorization": True},
        ))

    @router.get(OAUTH2_REDIRECT_PATH)
    async def swagger_ui_redirect() -> HTMLResponse:
        return _page(get_swagger_ui_oauth2_redirect_html())

    @router.get(REDOC_PATH)
    async def redoc(request: Request) -> HTMLResponse:
        r = root(request)
        return _page(get_redoc_html(
            openapi_url=r + openapi_url,
            title=f"{title} - ReDoc",
            redoc_js_url=asset_url("redoc.standalone.js", r),
            redoc_favicon_url=asset_url("favicon.png", r),
            with_google_fonts=False,
        ))

    @router.get(ASSETS_PREFIX + "{version}/{name}")
    async def asset(version: str, name: str) -> Response:
        media = ASSETS.get(name)
        if media is None or version != assets_version():
            raise RouteNotFoundError("no such documentation asset")
        return Response(
            _asset_bytes(name),
            media_type=media,
            headers={"cache-control": "public, max-age=31536000, immutable",
                     "x-content-type-options": "nosniff"},
        )

    return router


def is_docs_path(path: str) -> bool:
    """The documentation pages and their assets (the OpenAPI document is separate)."""
    return path in (DOCS_PATH, REDOC_PATH, OAUTH2_REDIRECT_PATH) or path.startswith(ASSETS_PREFIX)


def is_docs_surface(path: str) -> bool:
    """What ``--public-docs`` opens: the pages, their assets and the OpenAPI document. With an
    API key set and without that flag, they need the key like the API itself (the document
    describes every model, its features and, unless ``--no-example-rows``, an example row)."""
    return path == OPENAPI_PATH or is_docs_path(path)


#: ``WWW-Authenticate`` on a 401 from the docs surface: Bearer for API clients, and Basic so
#: that a browser prompts; the key is the password (any user name).
DOCS_CHALLENGES = ("Bearer", 'Basic realm="packserve API docs", charset="UTF-8"')


__all__ = [
    "ASSETS",
    "ASSETS_PREFIX",
    "ASSET_PACKAGE",
    "CSP",
    "DOCS_CHALLENGES",
    "DOCS_PATH",
    "OAUTH2_REDIRECT_PATH",
    "OPENAPI_PATH",
    "REDOC_PATH",
    "asset_url",
    "assets_dir",
    "assets_version",
    "docs_router",
    "is_docs_path",
    "is_docs_surface",
]

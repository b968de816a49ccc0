"""/docs and /redoc pages and their assets, in-process (the browser tests render them)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx

from packserve.serve.docs import ASSETS, CSP, asset_url, assets_version
from packserve.serve.settings import ServeSettings


def _get_all(app: object, paths: list[str]) -> dict[str, httpx.Response]:
    async def main() -> dict[str, httpx.Response]:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return {p: await c.get(p) for p in paths}

    return asyncio.run(main())


def test_pages_reference_only_this_server_and_assets_are_served(chapter_bundle: Path) -> None:
    from packserve.serve import create_app

    app = create_app(ServeSettings(model_path=chapter_bundle))
    pages = _get_all(app, ["/docs", "/redoc", "/docs/oauth2-redirect"])
    refs: set[str] = set()
    for path, r in pages.items():
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), path
        assert r.headers["content-security-policy"] == CSP
        assert "cdn." not in r.text and "googleapis" not in r.text, path
        refs |= set(re.findall(r'(?:src|href|spec-url)="([^"]+)"', r.text))
        refs |= set(re.findall(r"url: '([^']+)'", r.text))
    assert all(ref.startswith("/") for ref in refs), refs  # same origin, nothing external
    assert {asset_url(n) for n in ASSETS} | {"/openapi.json"} == refs

    assets = _get_all(app, [asset_url(n) for n in ASSETS])
    for name, media in ASSETS.items():
        r = assets[asset_url(name)]
        assert r.status_code == 200 and r.headers["content-type"] == media, name
        assert "immutable" in r.headers["cache-control"]
        assert len(r.content) > 1000
    assert b"SwaggerUIBundle" in assets[asset_url("swagger-ui-bundle.js")].content
    assert b"Redoc" in assets[asset_url("redoc.standalone.js")].content


def test_unknown_assets_are_404_json_and_docs_stay_out_of_the_schema(chapter_bundle: Path) -> None:
    from packserve.serve import create_app

    app = create_app(ServeSettings(model_path=chapter_bundle))
    bad = [f"/docs/assets/{assets_version()}/core.py", f"/docs/assets/{assets_version()}/..%2Fcore.py",
           "/docs/assets/0.0.0/swagger-ui.css", "/docs/assets/swagger-ui.css"]
    got = _get_all(app, [*bad, "/openapi.json"])
    for path in bad:
        assert got[path].status_code == 404, path
        assert got[path].json()["error"] == "not_found"
    paths = got["/openapi.json"].json()["paths"]
    assert not any(p.startswith(("/docs", "/redoc")) for p in paths)

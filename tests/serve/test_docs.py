"""/docs and /redoc pages and their assets, in-process (the browser tests render them)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx

from packserve.serve.openapi.docs import ASSETS, CSP, asset_url, assets_version
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


def _values(doc: object) -> str:
    import json

    return json.dumps(doc)


def test_no_example_rows_keeps_real_rows_out_of_the_schema(chapter_bundle: Path) -> None:
    """serve --no-example-rows: the document shows placeholders, none of the bundle's rows."""
    from packserve.bundle import read_manifest
    from packserve.serve import create_app

    rows = read_manifest(chapter_bundle).examples
    assert rows, "the fixture bundle stores example rows by default"
    real = [repr(v) for row in rows for v in row]

    async def doc(example_rows: bool) -> dict:  # type: ignore[type-arg]
        app = create_app(ServeSettings(model_path=chapter_bundle, example_rows=example_rows))
        await app.registry.load_all()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return (await c.get("/openapi.json")).json()  # type: ignore[no-any-return]

    shown = asyncio.run(doc(True))
    hidden = asyncio.run(doc(False))
    body = shown["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert body["example"] == {"features": rows[0]}
    text = _values(hidden)
    assert not [v for v in real if v in text]
    body = hidden["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert body["example"] == {"features": [0.0] * 15}


def test_pack_without_example_rows_stores_none(tmp_path: Path) -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    import packserve
    from packserve.bundle import read_manifest
    from packserve.serve import create_app

    data = load_iris()
    model = LogisticRegression(max_iter=300).fit(data.data, data.target)
    res = packserve.pack(model, tmp_path / "iris", sample=data.data[::10], name="iris",
                         example_rows=False)
    assert res.manifest.examples == [] and read_manifest(res.path).examples == []
    assert res.manifest.parity.passed  # parity still measured on the whole sample

    async def doc() -> dict:  # type: ignore[type-arg]
        app = create_app(ServeSettings(model_path=res.path))
        await app.registry.load_all()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            ok = await c.post("/predict", json={"features": [5.1, 3.5, 1.4, 0.2]})
            assert ok.status_code == 200  # warms up and serves without example rows
            return (await c.get("/openapi.json")).json()  # type: ignore[no-any-return]

    body = asyncio.run(doc())["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert body["example"] == {"features": [0.0] * 4}  # a placeholder: the bundle has no rows


def _basic(user: str, password: str) -> dict[str, str]:
    import base64

    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_with_an_api_key_the_docs_need_it_unless_public_docs(chapter_bundle: Path) -> None:
    from packserve.serve import create_app

    docs = ["/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect", asset_url("swagger-ui.css")]

    async def main() -> None:
        app = create_app(ServeSettings(model_path=chapter_bundle, api_key="k3y"))
        public = create_app(ServeSettings(model_path=chapter_bundle, api_key="k3y", public_docs=True))
        await app.registry.load_all()
        await public.registry.load_all()
        row = {"features": [0.0] * 15}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            for path in docs:
                r = await c.get(path)
                assert r.status_code == 401 and r.json()["error"] == "unauthorized", path
                challenges = r.headers.get_list("www-authenticate")
                assert challenges[0] == "Bearer" and challenges[1].startswith('Basic realm='), path
                for good in ({"x-api-key": "k3y"}, {"authorization": "Bearer k3y"},
                             _basic("anyone", "k3y"), _basic("", "k3y")):
                    assert (await c.get(path, headers=good)).status_code == 200, (path, good)
                for bad in (_basic("k3y", "wrong"), {"authorization": "Basic !!!"},
                            {"x-api-key": "k3"}, {"authorization": "Bearer k3y2"}):
                    assert (await c.get(path, headers=bad)).status_code == 401, (path, bad)
            # Basic is for the browser on the docs pages only, not for the API
            r = await c.post("/predict", json=row, headers=_basic("u", "k3y"))
            assert r.status_code == 401 and r.headers.get_list("www-authenticate") == ["Bearer"]
            for path in ("/health", "/health/live", "/health/ready", "/v2/health/ready", "/metrics"):
                assert (await c.get(path)).status_code == 200, path  # probes, scrapers: open
            assert (await c.get("/models")).status_code == 401
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=public),
                                     base_url="http://t") as c:
            for path in docs:
                assert (await c.get(path)).status_code == 200, path
            assert (await c.post("/predict", json=row)).status_code == 401
            doc = (await c.get("/openapi.json")).json()
            assert doc["paths"]["/predict"]["post"]["security"]  # the API still says it needs a key

    asyncio.run(main())

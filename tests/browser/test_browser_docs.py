"""/docs and /redoc of a real ``packserve serve`` in headless Chromium, with no internet.

Every request the pages make that is not addressed to the server is aborted and recorded,
so a page that still needed a CDN would be blank here and the test would say which URL.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers.browser import NAV_TIMEOUT_MS, assert_not_blank, open_page
from helpers.server import Server, running_server

REDOC_LOGO = "cdn.redoc.ly/redoc/logo-mini.svg"
pytestmark = pytest.mark.slow  # a real browser and server: ~20 s on 2 cores


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory: pytest.TempPathFactory, chapter_bundle: Path,
                iris_string_bundle: Path, regressor_bundle: Path) -> Iterator[Server]:
    """A repository: fraud (int labels, the default), iris (string labels), price (regressor)."""
    repo = tmp_path_factory.mktemp("docs-repo")
    shutil.copytree(chapter_bundle, repo / "fraud" / "1.0.0")
    shutil.copytree(iris_string_bundle, repo / "iris" / "1")
    shutil.copytree(regressor_bundle, repo / "price" / "1")
    with running_server(repo, "--default-model", "fraud") as srv:
        yield srv


def _operations(url: str, **kw: Any) -> set[tuple[str, str]]:
    spec = httpx.get(f"{url}/openapi.json", timeout=10, **kw).json()
    return {(method.upper(), path) for path, item in spec["paths"].items() for method in item}


def _shown_operations(page: Any) -> set[tuple[str, str]]:
    rows = page.eval_on_selector_all(
        ".opblock",
        "els => els.map(e => [e.querySelector('.opblock-summary-method').textContent.trim(),"
        " e.querySelector('.opblock-summary-path').dataset.path])",
    )
    return {(m, p) for m, p in rows}


def try_predict(page: Any) -> tuple[str, dict[str, Any], Any]:
    """Open POST /predict, "Try it out" with the prefilled example, Execute: (status, body)."""
    block = page.locator(".opblock-post").filter(
        has=page.locator('.opblock-summary-path[data-path="/predict"]'))
    block.locator(".opblock-summary").first.click()
    block.locator("button.try-out__btn").click()
    sent = json.loads(block.locator("textarea.body-param__text").input_value())
    block.locator("button.execute").click()
    status = block.locator(".live-responses-table tr.response .response-col_status").first
    status.wait_for(timeout=NAV_TIMEOUT_MS)
    body = json.loads(block.locator(".live-responses-table .microlight").first.inner_text())
    return status.inner_text().strip(), {"sent": sent, "got": body}, block


def test_swagger_ui_offline_shows_every_operation_and_try_it_out_predicts(
    browser: Any, docs_server: Server, tmp_path: Path
) -> None:
    url = docs_server.url
    expected = _operations(url)
    assert ("POST", "/models/iris/versions/1/predict/batch") in expected
    ctx, page, guard = open_page(browser)
    try:
        page.goto(f"{url}/docs")
        page.wait_for_selector(".opblock")
        shown = _shown_operations(page)
        assert expected <= shown, f"not rendered: {sorted(expected - shown)}"
        page.screenshot(path=tmp_path / "docs.png")

        status, io, block = try_predict(page)
        assert status == "200", io
        example = io["sent"]["features"]
        assert len(example) == 15  # the manifest's example row, prefilled by Swagger UI
        direct = httpx.post(f"{url}/predict", json=io["sent"], timeout=10).json()
        assert io["got"] == direct and io["got"]["prediction"] in (0, 1)
        block.screenshot(path=tmp_path / "docs-try-it-out.png")
    finally:
        ctx.close()
    assert guard.blocked == [], f"the page tried to leave the machine: {guard.blocked}"
    assert guard.console_errors == []
    assert_not_blank(tmp_path / "docs.png")
    assert_not_blank(tmp_path / "docs-try-it-out.png")


def test_redoc_offline_renders_every_operation(browser: Any, docs_server: Server,
                                               tmp_path: Path) -> None:
    url = docs_server.url
    spec = httpx.get(f"{url}/openapi.json", timeout=10).json()
    summaries = {op["summary"] for item in spec["paths"].values() for op in item.values()
                 if "summary" in op}
    ctx, page, guard = open_page(browser)
    try:
        page.goto(f"{url}/redoc")
        page.wait_for_selector("[data-section-id^='operation/']")
        text = page.inner_text("body")
        missing = sorted(s for s in summaries if s not in text)
        assert not missing, f"ReDoc did not render: {missing}"
        page.screenshot(path=tmp_path / "redoc.png")
    finally:
        ctx.close()
    assert guard.blocked == [], f"the page tried to leave the machine: {guard.blocked}"
    # ReDoc's sidebar credit ("API docs by Redocly") is an <img> on its CDN: our page's
    # Content-Security-Policy makes the browser refuse it (nothing leaves the machine; the
    # link text stays). Any other console error fails the test.
    others = [e for e in guard.console_errors if not (REDOC_LOGO in e and "Content Security" in e)]
    assert others == []
    assert_not_blank(tmp_path / "redoc.png")


def test_docs_behind_an_api_key_ask_the_browser_and_authorize_try_it_out(
    browser: Any, chapter_bundle: Path, tmp_path: Path
) -> None:
    """Key set: /docs answers 401 with a Basic challenge (a browser prompts; the key is the
    password); inside, "Authorize" with the key makes "Try it out" on /predict succeed."""
    key = "br0wser-key"
    with running_server(chapter_bundle, env={"PACKSERVE_API_KEY": key}) as srv:
        ctx, page, _ = open_page(browser)
        try:
            r = ctx.request.get(f"{srv.url}/docs")
            assert r.status == 401 and "Basic realm=" in r.headers["www-authenticate"]
            # headless, nobody answers the browser's password prompt: it gives up on auth
            with pytest.raises(Exception, match="ERR_INVALID_AUTH_CREDENTIALS"):
                page.goto(f"{srv.url}/docs")
        finally:
            ctx.close()
        expected = _operations(srv.url, headers={"x-api-key": key})
        ctx, page, guard = open_page(browser, http_credentials={"username": "me", "password": key})
        try:
            assert page.goto(f"{srv.url}/docs").status == 200
            page.wait_for_selector(".opblock")
            assert expected <= _shown_operations(page)
            page.locator("button.authorize").first.click()
            box = page.locator(".auth-container").filter(has_text="X-API-Key")
            box.locator("input").fill(key)
            box.locator("button.authorize").click()
            page.locator("button.btn-done").first.click()
            status, io, block = try_predict(page)
            assert status == "200", io
            assert io["got"]["model_version"] == "1.0.0"
            block.screenshot(path=tmp_path / "docs-authorized.png")
        finally:
            ctx.close()
    assert guard.blocked == [] and guard.console_errors == []
    assert_not_blank(tmp_path / "docs-authorized.png")

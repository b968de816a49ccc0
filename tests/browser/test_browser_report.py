"""The HTML bench report of real runs against a real server, opened in headless Chromium.

Checks what a person would see: every plot drawn (lines, labels), no tick label cut off at an
edge (the "99.99%" tick sits on the right border), the charts using the page's width, and the
date, packserve version and generator lag in the page.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import packserve
from helpers.browser import assert_not_blank, open_page
from helpers.server import Server, running_server
from packserve.bench import find_max, run_bench, write_html

pytestmark = pytest.mark.slow  # a real server, two short load runs and a browser: ~15 s

# Every <svg>: its size, how many lines/markers it draws, and any <text> whose box leaves it.
_SVG_FACTS = """svgs => svgs.map(s => {
  const r = s.getBoundingClientRect();
  const out = [...s.querySelectorAll('text')].filter(t => {
    const b = t.getBoundingClientRect();  // on screen: after rotation and scaling
    return b.left < r.left - 0.5 || b.top < r.top - 0.5 || b.right > r.right + 0.5
        || b.bottom > r.bottom + 0.5;
  }).map(t => t.textContent);
  return {title: s.querySelector('text').textContent, width: r.width, height: r.height, top: r.top,
          lines: s.querySelectorAll('polyline').length, points: s.querySelectorAll('circle').length,
          texts: [...s.querySelectorAll('text')].map(t => t.textContent), clipped: out};
})"""


@pytest.fixture(scope="module")
def server(chapter_bundle: Path) -> Iterator[Server]:
    with running_server(chapter_bundle) as srv:
        yield srv


def off_loop(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Playwright's sync API keeps an event loop running on this thread; the bench runs its
    own (asyncio.run), so it runs on another thread."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args, **kwargs).result(timeout=120)


def _open_report(browser: Any, path: Path, shot: Path, width: int = 1600) -> tuple[list[dict[str, Any]], str]:
    ctx, page, guard = open_page(browser)
    try:
        page.set_viewport_size({"width": width, "height": 1000})
        page.goto(path.as_uri())
        page.wait_for_selector("svg")
        facts: list[dict[str, Any]] = page.eval_on_selector_all("svg", _SVG_FACTS)
        charts = page.eval_on_selector(".charts", "e => e.getBoundingClientRect().width")
        text = page.inner_text("body")
        page.screenshot(path=shot, full_page=True)
    finally:
        ctx.close()
    assert guard.blocked == [] and guard.console_errors == []
    assert charts >= 0.9 * (width - 48), f"charts use {charts:.0f} of {width} px"
    assert_not_blank(shot)
    return facts, text


def _check_plots(facts: list[dict[str, Any]], titles: list[str]) -> None:
    assert [f["title"] for f in facts] == titles
    for f in facts:
        assert f["lines"] >= 1 or f["points"] >= 1, f"{f['title']}: nothing drawn"
        assert "no data" not in f["texts"], f["title"]
        assert f["width"] > 400 and f["height"] > 180, f
        assert f["clipped"] == [], f"{f['title']}: labels cut off: {f['clipped']}"
    tops = sorted({round(f["top"]) for f in facts})
    assert len(tops) < len(facts), "one chart per row: the width is not used"


def _check_header(text: str) -> None:
    assert re.search(r"run \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", text), text[:300]
    assert f"packserve {packserve.__version__}" in text


def test_report_of_one_run_renders_every_plot(browser: Any, server: Server, tmp_path: Path) -> None:
    result = off_loop(run_bench, server.url, rate=80, duration=1.5)
    assert result.phase.ok > 0
    report = write_html(result, tmp_path / "report.html")
    facts, text = _open_report(browser, report, tmp_path / "report.png")
    _check_plots(facts, ["Latency by percentile", "Throughput over time", "Latency over time",
                         "Server memory over time", "Server CPU over time"])
    assert "99.99%" in facts[0]["texts"]  # the tick that used to be cut off
    _check_header(text)
    assert re.search(r"generator\s+kept up \(CPU \d+%/process, sends late by p50 [\d.]+ / p99 [\d.]+ ms",
                     text), text


def test_find_max_report_renders_every_plot(browser: Any, server: Server, tmp_path: Path) -> None:
    fm = off_loop(find_max, server.url, start_rate=60, step_duration=0.5, max_steps=3)
    assert len(fm.steps) == 3
    report = write_html(fm, tmp_path / "find-max.html")
    facts, text = _open_report(browser, report, tmp_path / "find-max.png")
    _check_plots(facts, ["Latency percentiles vs offered rate", "Achieved vs offered throughput",
                         "Throughput over time", "Latency over time", "Server memory over time",
                         "Server CPU over time"])
    _check_header(text)
    assert "sends late p50 / p99 ms" in text

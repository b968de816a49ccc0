"""Browser-test helpers: the Chromium binary, an offline-guarded page, non-blank screenshots.

Playwright's own browser download needs a CDN, so the browser is Debian's ``chromium``
(installed by scripts/test.sh; ``PACKSERVE_CHROMIUM`` overrides the path). Every page gets a
request guard: anything not addressed to 127.0.0.1 is aborted and recorded, so "works
offline" is checked, not assumed.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

NAV_TIMEOUT_MS = 30_000  # bounded: a 2-core CI machine shared with the rest of the suite
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]


def chromium_path() -> str | None:
    found = os.environ.get("PACKSERVE_CHROMIUM") or shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


@dataclass
class Guard:
    """What a page tried to load from anywhere but this machine, and console errors."""

    blocked: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)


def open_page(browser: Any, **context_args: Any) -> tuple[Any, Any, Guard]:
    """A new context + page (1400x900) with the offline guard installed."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 900}, **context_args)
    ctx.set_default_timeout(NAV_TIMEOUT_MS)
    guard = Guard()

    def route(r: Any) -> None:
        url = urlparse(r.request.url)
        if url.scheme in ("http", "https") and url.hostname != "127.0.0.1":
            guard.blocked.append(r.request.url)
            r.abort()
        else:
            r.continue_()

    ctx.route("**/*", route)
    page = ctx.new_page()
    page.on("console", lambda m: guard.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: guard.console_errors.append(str(e)))
    return ctx, page, guard


def assert_not_blank(path: Path, *, min_std: float = 12.0, min_ink: float = 0.02) -> None:
    """A screenshot with real content: grey-level spread and a share of non-background pixels."""
    from PIL import Image, ImageStat

    assert path.is_file() and path.stat().st_size > 0, path
    img = Image.open(path).convert("L")
    std = ImageStat.Stat(img).stddev[0]
    hist = img.histogram()
    background = max(range(256), key=lambda v: hist[v])
    ink = 1.0 - hist[background] / (img.width * img.height)
    assert std >= min_std, f"{path.name}: nearly uniform (grey-level std {std:.1f})"
    assert ink >= min_ink, f"{path.name}: {ink:.1%} of pixels differ from the background"

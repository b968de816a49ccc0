"""Headless Chromium (Debian's ``chromium``, installed by scripts/test.sh) driven by Playwright.

Tests here skip, with the reason, only where no Chromium is installed or Playwright is missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from helpers.browser import CHROMIUM_ARGS, NAV_TIMEOUT_MS, chromium_path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Module-scoped on purpose: while Playwright's sync API runs, its event loop is this
    thread's running loop, so an ``asyncio.run`` in any later test would fail."""
    exe = chromium_path()
    if exe is None:
        pytest.skip("no Chromium installed (scripts/test.sh installs Debian's `chromium` with "
                    "apt-get; it could not here)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=exe,
            args=CHROMIUM_ARGS,
            timeout=NAV_TIMEOUT_MS,
        )
        try:
            yield b
        finally:
            b.close()

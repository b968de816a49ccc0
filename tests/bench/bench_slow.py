"""The slow test server's known constants and a handle on it (shared by conftest and tests).

A module of its own, not ``conftest``: several test directories have a conftest.py, and
``from conftest import ...`` could pick up the wrong one.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

import httpx

SERVICE_MS = 10.0
CAP = 4  # -> capacity CAP / SERVICE_MS = 400 req/s


@dataclass
class Slow:
    url: str
    proc: subprocess.Popen[bytes]

    def stats(self) -> dict[str, int]:
        return dict(httpx.get(f"{self.url}/stats", timeout=5).json()["stats"])

    def clear(self) -> None:
        httpx.post(f"{self.url}/stats/clear", timeout=5)

    def bodies(self) -> list[dict]:
        return list(httpx.get(f"{self.url}/stats", timeout=5).json()["bodies"])

"""Bench fixtures: the deliberately slow test server, and a real packserve server."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from bench_slow import CAP, SERVICE_MS, Slow

from helpers.server import Server, free_port, running_server


@pytest.fixture(scope="session")
def slow_server() -> Iterator[Slow]:
    """slowserver.py: 10 ms service time, at most 4 requests at a time (see its docstring)."""
    port = free_port()
    script = Path(__file__).with_name("slowserver.py")
    proc = subprocess.Popen([sys.executable, str(script), str(port), str(SERVICE_MS), str(CAP)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the slow test server did not start")
            time.sleep(0.05)
        yield Slow(url, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def packserve_server(chapter_bundle: Path) -> Iterator[Server]:
    """A real ``packserve serve`` of the chapter bundle ('fraud')."""
    with running_server(chapter_bundle) as srv:
        yield srv

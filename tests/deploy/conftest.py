"""Deploy-layer helpers: start a command line as a plain local process and wait for a path."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest


@dataclass
class Proc:
    proc: subprocess.Popen[bytes]
    log: Path
    url: str

    def output(self) -> str:
        return self.log.read_text(errors="replace")


Launcher = Callable[..., contextlib.AbstractContextManager[Proc]]


@contextlib.contextmanager
def _launch(cmd: list[str], env: Mapping[str, str], *, url: str, ready_path: str,
            timeout: float = 60.0, cwd: Path | None = None) -> Iterator[Proc]:
    log = tempfile.NamedTemporaryFile(prefix="packserve-deploy-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env},
                            cwd=cwd)
    p = Proc(proc, Path(log.name), url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"exited early ({proc.returncode}):\n{p.output()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url}{ready_path} not 200 after {timeout}s:\n{p.output()[-3000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}{ready_path}", timeout=2.0).status_code == 200:
                    break
            time.sleep(0.05)
        yield p
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log.close()
        with contextlib.suppress(OSError):
            os.unlink(log.name)


@pytest.fixture
def launch() -> Launcher:
    return _launch

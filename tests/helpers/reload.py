"""Hot-reload helpers shared by the repository tests: put a version folder in place the way a
deployment tool would, and keep V2 traffic flowing at a real server while versions change."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

ROW = [0.25] * 15  # one row of the chapter model


def place(src: Path, dest: Path, *, corrupt: bool = False) -> None:
    """Put a version directory in place atomically (stage hidden, then rename); ``corrupt``:
    its model.onnx keeps its size but not its sha256."""
    staging = dest.parent / f".{dest.name}.staging"
    shutil.copytree(src, staging)
    if corrupt:
        with (staging / "model.onnx").open("r+b") as fh:
            fh.seek(100)
            fh.write(b"\x00\x01\x02\x03")
    staging.rename(dest)


@dataclass
class Sample:
    sent: float
    received: float
    status: int
    version: str | None


class V2Traffic:
    """``threads`` clients sending one chapter row to ``/v2/models/{model}/infer`` back to back
    until the ``with`` block ends (at most ``limit_s``); records every answer's status and
    version, and every transport error or non-200 in ``errors``."""

    def __init__(self, url: str, headers: Mapping[str, str], *, model: str = "fraud",
                 threads: int = 3, limit_s: float = 60.0) -> None:
        self.url, self.headers, self.limit_s = f"{url}/v2/models/{model}/infer", dict(headers), limit_s
        self.samples: list[Sample] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        self.body = json.dumps({"inputs": [
            {"name": "input", "datatype": "FP32", "shape": [1, 15], "data": ROW}]}).encode()

    def __enter__(self) -> V2Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def count(self) -> int:
        with self._lock:
            return len(self.samples)

    def ok(self) -> int:
        with self._lock:
            return sum(1 for s in self.samples if s.status == 200)

    def wait_for(self, n: int, timeout: float = 20.0) -> None:
        """Until ``n`` more answers came (or ``timeout``: the caller's asserts then say why)."""
        start = self.count()
        end = time.monotonic() + timeout
        while self.count() < start + n and time.monotonic() < end:
            time.sleep(0.01)

    def _run(self) -> None:
        end = time.monotonic() + self.limit_s
        with httpx.Client(headers=self.headers, timeout=20) as c:
            while not self._stop.is_set() and time.monotonic() < end:
                t0 = time.monotonic()
                try:
                    r = c.post(self.url, content=self.body)
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.errors.append(repr(exc))
                    continue
                t1 = time.monotonic()
                version = r.json().get("model_version") if r.status_code == 200 else None
                with self._lock:
                    self.samples.append(Sample(t0, t1, r.status_code, version))
                    if r.status_code != 200:
                        self.errors.append(f"{r.status_code} {r.text[:200]}")


__all__ = ["ROW", "Sample", "V2Traffic", "place"]

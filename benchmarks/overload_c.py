"""The open-loop generator of bench_overload in C: ``overload_gen.c``, one thread, epoll.

wrk with a Lua schedule (``overload_wrk.py``) needs one thread per connection — its Lua has
no per-connection identity — and at 512 connections and ~45k req/s those threads took most
of the generator's core, so it fell behind and an overload run measured the generator. This
sends the same schedule (wrk2's method: connection i is due at start + i/rate + k·N/rate,
latency from the due time, every 503 checked for ``Retry-After``, the generator's own timer
lateness reported) from one event loop, and returns the same result as
``overload_wrk.run_open_loop`` (``wrk_cpu`` is this generator's CPU share, the key kept so
callers work unchanged). The C file is compiled with the system's C compiler on first use,
cached under ``tmp`` by the source's hash.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from overload_wrk import run_generator

__all__ = ["SOURCE", "build", "have_cc", "run_open_loop"]

SOURCE = Path(__file__).with_name("overload_gen.c")
START_DELAY_S = 0.5  # every connection opened by then


def have_cc() -> str | None:
    return shutil.which("gcc") or shutil.which("cc")


def build(tmp: Path) -> Path:
    """Compile ``overload_gen.c`` into ``tmp/overload_gen-<hash>`` (once per source version)."""
    cc = have_cc()
    if cc is None:
        raise RuntimeError("no C compiler (gcc or cc) on PATH")
    src = SOURCE.read_bytes()
    exe = tmp / f"overload_gen-{hashlib.sha256(src).hexdigest()[:12]}"
    if not exe.exists():
        part = exe.with_suffix(".part")
        out = subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-o", str(part), str(SOURCE), "-lm"],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"compiling {SOURCE.name} failed:\n{out.stderr[-4000:]}")
        part.replace(exe)
    return exe


def run_open_loop(
    url: str, body: bytes, *, rate: float, duration: float, timeout: float, connections: int,
    pin: str | None, tmp: Path,
) -> dict[str, object]:
    """Offer ``rate`` req/s of ``POST`` to ``url`` (a base url: ``/predict``, as overload_wrk)
    for ``duration`` s; the result has overload_wrk's keys (see its module doc)."""
    exe = build(tmp)
    body_file = tmp / "overload_body.json"
    body_file.write_bytes(body)
    if "/" not in url.removeprefix("http://"):
        url += "/predict"
    run_s = START_DELAY_S + duration + timeout + 1.0
    cmd = [str(exe), url, str(body_file), repr(float(rate)), repr(float(duration)),
           repr(float(timeout)), str(connections), repr(START_DELAY_S)]
    return run_generator("overload_gen", cmd, run_s, pin)

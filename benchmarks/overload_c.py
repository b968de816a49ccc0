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
import json
import resource
import shutil
import subprocess
from pathlib import Path

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
    if pin is not None:
        cmd = ["taskset", "-c", pin, *cmd]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=run_s + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"overload_gen gave no result (exit {out.returncode}):\n"
                           f"{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    r: dict[str, object] = json.loads(line[7:])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    r["wrk_cpu"] = round(cpu / run_s, 2)  # share of one core over the run, as overload_wrk's
    answered = int(r["ok"]) + int(r["s503"]) + int(r["late"]) + int(r["other"])  # type: ignore[call-overload]
    r["unanswered"] = int(r["scheduled"]) - answered  # type: ignore[call-overload]
    return r

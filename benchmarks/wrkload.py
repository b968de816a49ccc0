"""Closed-loop load with ``wrk``: one Lua script writer and one runner for every benchmark.

The script reads its POST bodies from files when wrk starts (binary-safe: V2 binary tensors,
images), sends one body as wrk's static request or cycles over several (no response cache
can help), and reports in ``done()`` one JSON line with exact counts and microsecond
percentiles, so nothing is parsed from wrk's rounded text. Non-2xx/3xx answers are counted
by wrk itself (``summary.errors.status``), without a per-response Lua callback that would
cost the generator CPU. The open-loop generator is :mod:`overload_wrk` (another method).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT {\"requests\": %d, \"duration_us\": %d, \"p50_us\": %d, \"p99_us\": %d, " ..
    "\"socket_errors\": %d, \"non2xx\": %d}\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""

_SEND = """
if #bodies == 1 then
  wrk.body = bodies[1]
else
  local i = 0
  request = function()
    i = i % #bodies + 1
    return wrk.format(nil, nil, nil, bodies[i])
  end
end
"""


def ensure_wrk() -> str:
    """wrk's path; installs Debian's package when it is missing (the benchmarks need it)."""
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk not found: apt-get install -y wrk", file=sys.stderr, flush=True)
    subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, capture_output=True)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is required (apt-get install -y wrk)")
    return found


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int


def script(path: Path, bodies: Sequence[bytes | str],
           headers: Mapping[str, str] | None = None) -> Path:
    """Write a POST script at ``path`` (its bodies beside it as ``<stem>_<i>.bin``); default
    header ``Content-Type: application/json``."""
    files = []
    for i, body in enumerate(bodies):
        f = path.with_name(f"{path.stem}_{i}.bin")
        f.write_bytes(body.encode() if isinstance(body, str) else body)
        files.append(f)
    if not files:
        raise ValueError("a wrk script needs at least one body")
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    lines = ["local bodies = {}"]
    lines += [f'do local f = io.open({json.dumps(str(f))}, "rb"); bodies[#bodies + 1] = f:read("*a"); '
              "f:close() end" for f in files]
    lines += ['wrk.method = "POST"']
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in hdrs.items()]
    path.write_text("\n".join(lines) + "\n" + _SEND + _DONE)
    return path


def run(url: str, lua: Path, conns: int, duration: float, *, wrk: str = "wrk", threads: int = 1,
        pin: str | None = None, timeout_s: float | None = None) -> WrkResult:
    """``wrk -t threads -c conns -d duration`` with ``lua`` against ``url`` (``pin``: a
    ``taskset -c`` CPU list for wrk; ``timeout_s``: wrk's per-request timeout, default 2 s)."""
    cmd = [wrk, f"-t{threads}", f"-c{conns}", f"-d{max(1, round(duration))}s", "-s", str(lua)]
    if timeout_s is not None:
        cmd += ["--timeout", f"{timeout_s:g}s"]
    cmd.append(url)
    if pin is not None:
        cmd = ["taskset", "-c", pin, *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result:\n{out.stdout}{out.stderr}")
    r = json.loads(line[7:])
    return WrkResult(
        rps=r["requests"] / (r["duration_us"] / 1e6) if r["duration_us"] else 0.0,
        p50_ms=r["p50_us"] / 1000, p99_ms=r["p99_us"] / 1000, requests=r["requests"],
        non_2xx=r["non2xx"], socket_errors=r["socket_errors"],
    )


__all__ = ["WrkResult", "ensure_wrk", "run", "script"]

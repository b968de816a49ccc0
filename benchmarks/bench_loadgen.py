"""The load generator's own ceiling, against baselines measured in the same run (issue #7).

    python benchmarks/bench_loadgen.py [--duration 3] [--bundle DIR]

Target: the bare fixed-JSON endpoint of tests/bench/slowserver.py (raw ASGI under uvicorn,
``GET /fixed``), so the server does as little as possible. Each client runs closed loop at
32 connections for ``--duration`` seconds; we record requests/s *and the client's own CPU
seconds*. ``requests per client CPU-second`` is the client's ceiling on one core, whatever
the server did: on a 2-core host the server may be the bottleneck, so the throughput alone
would understate a fast client.

Clients: ``packserve.bench`` (raw asyncio HTTP/1.1 on uvloop), ``httpx.AsyncClient`` (the
usual Python choice) and ``wrk -t1`` (C, one thread) when installed. With ``--bundle``, the
same is done against a real ``packserve serve`` of that bundle (POST /predict) to compare the
generator's ceiling with packserve's own throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from packserve.bench.client import Target
from packserve.bench.inputs import Signature, build_bodies
from packserve.bench.loadgen import LoadSpec, phase_health, run_phase_sync

ROOT = Path(__file__).resolve().parent.parent
CONNS = 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def run_packserve(url: str, request: bytes, duration: float) -> tuple[float, float]:
    spec = LoadSpec(url, (request,), "closed", duration, concurrency=CONNS)
    res = run_phase_sync(spec)
    if res.error_count:
        print(f"  (packserve.bench saw errors: {res.errors})")
    h = phase_health(res)
    if not h.ok:
        print(f"  (packserve.bench was the limit here: {'; '.join(h.reasons)})")
    return res.ok / res.wall_s, res.generator_cpu_s / max(res.ok, 1)


def run_httpx(url: str, method: str, body: bytes | None, duration: float) -> tuple[float, float]:
    async def main() -> int:
        limits = httpx.Limits(max_connections=CONNS, max_keepalive_connections=CONNS)
        async with httpx.AsyncClient(limits=limits, timeout=10) as client:
            t_end = time.perf_counter() + duration
            count = 0

            async def worker() -> None:
                nonlocal count
                while time.perf_counter() < t_end:
                    r = await client.request(method, url, content=body,
                                             headers={"content-type": "application/json"})
                    if r.status_code == 200:
                        count += 1

            await asyncio.gather(*(worker() for _ in range(CONNS)))
            return count

    cpu0, t0 = time.process_time(), time.perf_counter()
    n = asyncio.run(main())
    return n / (time.perf_counter() - t0), (time.process_time() - cpu0) / max(n, 1)


def run_wrk(url: str, body: bytes | None, duration: float) -> tuple[float, float] | None:
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    cmd = [wrk, "-t1", f"-c{CONNS}", f"-d{max(1, round(duration))}s", url]
    script = None
    if body is not None:
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)  # noqa: SIM115
        body_lua = body.decode().replace("\\", "\\\\").replace('"', '\\"')
        script.write('wrk.method = "POST"\n'
                     'wrk.headers["Content-Type"] = "application/json"\n'
                     f'wrk.body = "{body_lua}"\n')
        script.close()
        cmd[1:1] = ["-s", script.name]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rps = float(next(ln for ln in out.splitlines() if ln.startswith("Requests/sec")).split()[1])
    total = int(next(ln for ln in out.splitlines() if "requests in" in ln).split()[0])
    return rps, cpu / max(total, 1)


def compare(title: str, url: str, method: str, path: str, body: bytes | None,
            duration: float) -> None:
    target = Target.parse(url)
    request = target.request(method, path, body)
    rows: list[tuple[str, float, float]] = []
    rps, cpu = run_packserve(url, request, duration)
    rows.append(("packserve.bench", rps, cpu))
    rps, cpu = run_httpx(url + path, method, body, duration)
    rows.append(("httpx.AsyncClient", rps, cpu))
    w = run_wrk(url + path, body, duration)
    if w is not None:
        rows.append(("wrk -t1 (C)", *w))
    # open loop at 80% of what the closed loop achieved: does the scheduler keep up, at what cost?
    rate = round(0.8 * rows[0][1], -2)
    res = run_phase_sync(LoadSpec(url, (request,), "open", duration, rate=rate))
    h = phase_health(res)
    open_line = (f"packserve.bench open loop at {rate:,.0f} req/s: achieved "
                 f"{res.ok / res.wall_s:,.0f} req/s, client CPU "
                 f"{res.generator_cpu_s / max(res.ok, 1) * 1e6:.1f} us/req, sends late by "
                 f"p50 {h.schedule_lag_p50_ms:.2f} / p99 {h.schedule_lag_p99_ms:.2f} ms, "
                 f"generator {'kept up' if h.ok else 'could not keep up'}")
    print(f"\n{title}  ({CONNS} connections, closed loop, {duration:g} s each)")
    print(f"{'client':<20}{'req/s achieved':>16}{'client CPU us/req':>19}"
          f"{'ceiling req/s/core':>20}{'vs httpx':>10}")
    base = rows[1][2]
    for name, rps, cpu in rows:
        print(f"{name:<20}{rps:>16,.0f}{cpu * 1e6:>19.1f}{1 / cpu:>20,.0f}{base / cpu:>9.1f}x")
    print(open_line)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--bundle", type=Path, default=None)
    args = ap.parse_args()
    port = free_port()
    slow = subprocess.Popen([sys.executable, str(ROOT / "tests/bench/slowserver.py"),
                             str(port), "10", "4"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_up(url + "/health/ready")
        compare("bare fixed-JSON ASGI app (GET /fixed)", url, "GET", "/fixed", None,
                args.duration)
    finally:
        slow.terminate()
        slow.wait(10)
    if args.bundle is not None:
        port = free_port()
        srv = subprocess.Popen([sys.executable, "-m", "packserve", "serve", str(args.bundle),
                                "--host", "127.0.0.1", "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_up(url + "/health/ready")
            body = build_bodies(Signature.from_bundle(args.bundle), count=1)[0]
            compare(f"packserve serve {args.bundle.name} (POST /predict, one row)", url,
                    "POST", "/predict", body, args.duration)
        finally:
            srv.terminate()
            srv.wait(30)


if __name__ == "__main__":
    main()

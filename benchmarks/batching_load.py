"""Load drivers for ``bench_batching.py``: wrk in a closed loop (through :mod:`wrkload`), an
asyncio open loop for the overload run, and the batcher's latency histograms from ``/metrics``.

Kept apart from the benchmark's flow (models, servers, configurations, report) so that each
file has one job; run the benchmark, not this module.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import wrkload
from wrkload import WrkResult

# --- closed loop: wrk ---------------------------------------------------------------------------


def run_wrk(wrk: str, url: str, script: Path, conns: int, duration: float) -> WrkResult:
    """``POST /predict`` at ``conns`` connections (two wrk threads from 16 on)."""
    return wrkload.run(f"{url}/predict", script, conns, duration, wrk=wrk,
                       threads=1 if conns < 16 else 2)


def wrk_script(dirpath: Path, rows: np.ndarray) -> Path:
    """A wrk script cycling POST bodies over distinct rows (no response cache can help)."""
    bodies = [json.dumps({"features": [float(v) for v in r]}) for r in rows[:256]]
    return wrkload.script(dirpath / "post.lua", bodies)


# --- open loop: overload ------------------------------------------------------------------------


@dataclass
class OpenLoopResult:
    offered_rps: float
    sent: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    ok_lat: list[float] = field(default_factory=list)
    rej_lat: list[float] = field(default_factory=list)
    schedule_lag: list[float] = field(default_factory=list)
    retry_after_seen: bool = False


async def open_loop(url: str, bodies: list[bytes], rate: float, duration: float,
                    max_conns: int = 512, timeout: float = 10.0) -> OpenLoopResult:
    """Constant-rate arrivals; latency counted from each request's *scheduled* time."""
    from packserve.bench.client import Connection, RequestFailed, Target

    target = Target.parse(url)
    reqs = [target.request("POST", "/predict", b) for b in bodies]
    res = OpenLoopResult(rate)
    free: list[Connection] = []
    for _ in range(64):  # warm connections: connection setup is not what is measured
        c = Connection(target)
        await c.connect(timeout)
        free.append(c)
    opened = 0
    clock = time.perf_counter
    total = int(rate * duration)
    tasks: set[asyncio.Task[None]] = set()

    async def one(i: int, due: float) -> None:
        nonlocal opened
        conn = free.pop() if free else None
        if conn is None:
            opened += 1
            conn = Connection(target)
        res.sent += 1
        try:
            status, _ = await conn.request(reqs[i % len(reqs)], timeout)
        except RequestFailed as exc:
            res.statuses[exc.kind] = res.statuses.get(exc.kind, 0) + 1
            return
        lat = clock() - due
        res.statuses[str(status)] = res.statuses.get(str(status), 0) + 1
        (res.ok_lat if status == 200 else res.rej_lat).append(lat)
        free.append(conn)

    async def probe_retry_after() -> None:
        async with httpx.AsyncClient(timeout=timeout) as client:
            while not res.retry_after_seen and clock() < t0 + duration:
                r = await client.post(f"{url}/predict", content=bodies[0],
                                      headers={"content-type": "application/json"})
                if r.status_code == 503 and "retry-after" in r.headers:
                    res.retry_after_seen = True
                await asyncio.sleep(0.05)

    t0 = clock() + 0.05
    prober = asyncio.create_task(probe_retry_after())
    for i in range(total):
        due = t0 + i / rate
        now = clock()
        if due > now:
            await asyncio.sleep(due - now)
            now = clock()
        res.schedule_lag.append(now - due)
        if len(tasks) >= max_conns:
            res.statuses["generator_cap"] = res.statuses.get("generator_cap", 0) + 1
            continue
        t = asyncio.create_task(one(i, due))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=timeout + 5)
    prober.cancel()
    return res


WAIT = "packserve_batch_queue_wait_seconds"
IN_BATCHER = "packserve_batch_request_seconds"  # submit -> result: wait + compute + hops


def wait_histogram(metrics_text: str, name: str = WAIT) -> dict[float, float]:
    """Cumulative bucket counts of one batcher histogram (le -> count)."""
    out: dict[float, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith(name + "_bucket"):
            le = re.search(r'le="([^"]+)"', line).group(1)  # type: ignore[union-attr]
            out[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def hist_p99(before: dict[float, float], after: dict[float, float]) -> float:
    """Upper bucket bound holding the 99th percentile of what was observed in between (ms)."""
    delta = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    total = delta[-1][1] if delta else 0.0
    for le, n in delta:
        if total and n >= 0.99 * total:
            return le * 1000
    return float("nan")


def pct(values: list[float], p: float) -> float:
    return float(np.percentile(values, p)) * 1000 if values else float("nan")

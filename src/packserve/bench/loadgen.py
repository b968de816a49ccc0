"""Open-loop and closed-loop load generation on one asyncio event loop.

Open loop (``rate``): request *i* is due at ``t0 + i/rate`` whatever happened to earlier
requests, and its latency is measured from that *scheduled* time. A server that stalls
therefore shows the stall in every request that was due during it (no "coordinated
omission", as in wrk2 / perf_analyzer). Requests wait for a free keep-alive connection; the
pool grows on demand up to ``max_connections``.

Closed loop (``concurrency``): C workers each send, wait, send again - the classic
"users" model; it measures what the server does at a fixed concurrency.

The generator watches itself: how late the scheduler issued requests, how late a 5 ms
probe timer fired (event-loop lag) and its own CPU use. :func:`phase_health` turns these
into a verdict so a generator limit is never reported as the server's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from packserve.bench.client import Connection, RequestFailed, Target
from packserve.bench.histogram import Histogram

Mode = Literal["open", "closed"]
ProgressSink = Callable[[int, int, int], None]  # (sent, ok, errors)

_PROBE_S = 0.005
_TIMER_RESOLUTION_S = 0.001
# A generator is "keeping up" while these hold; see phase_health.
MAX_SCHEDULE_LAG_P50_MS = 5.0  # sustained lateness: the generator is falling behind
MAX_LOOP_LAG_P50_MS = 5.0
MAX_GENERATOR_CPU = 0.90
JITTER_WARN_MS = 5.0  # tail timing jitter worth a warning ...
JITTER_WARN_RELATIVE = 0.10  # ... when it is also this fraction of the measured p99


@dataclass(frozen=True)
class LoadSpec:
    """One load phase. ``requests`` are pre-encoded HTTP requests, used round-robin."""

    url: str
    requests: tuple[bytes, ...]
    mode: Mode
    duration_s: float
    rate: float = 0.0
    concurrency: int = 0
    timeout_s: float = 10.0
    max_connections: int = 512
    bucket_s: float = 1.0
    start_offset_s: float = 0.0  # open loop: phase shift of this process's schedule


@dataclass
class PhaseResult:
    """Raw measurements of one phase (mergeable across generator processes)."""

    mode: Mode
    offered_rate: float
    concurrency: int
    duration_s: float
    wall_s: float = 0.0
    sent: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latency: Histogram = field(default_factory=Histogram)
    schedule_lag: Histogram = field(default_factory=Histogram)
    loop_lag: Histogram = field(default_factory=Histogram)
    generator_cpu_s: float = 0.0
    processes: int = 1
    connections_opened: int = 0
    connection_cap_hit: bool = False
    timeline: list[Histogram] = field(default_factory=list)  # ok latencies per bucket
    timeline_errors: list[int] = field(default_factory=list)
    bucket_s: float = 1.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "offered_rate": self.offered_rate,
            "concurrency": self.concurrency, "duration_s": self.duration_s,
            "wall_s": self.wall_s, "sent": self.sent, "ok": self.ok, "errors": self.errors,
            "latency": self.latency.to_dict(), "schedule_lag": self.schedule_lag.to_dict(),
            "loop_lag": self.loop_lag.to_dict(), "generator_cpu_s": self.generator_cpu_s,
            "processes": self.processes, "connections_opened": self.connections_opened,
            "connection_cap_hit": self.connection_cap_hit,
            "timeline": [h.to_dict() for h in self.timeline],
            "timeline_errors": self.timeline_errors, "bucket_s": self.bucket_s,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PhaseResult:
        r = cls(d["mode"], d["offered_rate"], d["concurrency"], d["duration_s"])
        for k in ("wall_s", "sent", "ok", "errors", "generator_cpu_s", "processes",
                  "connections_opened", "connection_cap_hit", "timeline_errors", "bucket_s"):
            setattr(r, k, d[k])
        r.latency = Histogram.from_dict(d["latency"])
        r.schedule_lag = Histogram.from_dict(d["schedule_lag"])
        r.loop_lag = Histogram.from_dict(d["loop_lag"])
        r.timeline = [Histogram.from_dict(h) for h in d["timeline"]]
        return r

    def merge(self, other: PhaseResult) -> None:
        """Add another generator process's measurements of the same phase."""
        self.offered_rate += other.offered_rate
        self.concurrency += other.concurrency
        self.wall_s = max(self.wall_s, other.wall_s)
        self.sent += other.sent
        self.ok += other.ok
        for k, v in other.errors.items():
            self.errors[k] = self.errors.get(k, 0) + v
        self.latency.merge(other.latency)
        self.schedule_lag.merge(other.schedule_lag)
        self.loop_lag.merge(other.loop_lag)
        self.generator_cpu_s += other.generator_cpu_s
        self.processes += other.processes
        self.connections_opened += other.connections_opened
        self.connection_cap_hit = self.connection_cap_hit or other.connection_cap_hit
        n = max(len(self.timeline), len(other.timeline))
        while len(self.timeline) < n:
            self.timeline.append(Histogram())
            self.timeline_errors.append(0)
        for i, h in enumerate(other.timeline):
            self.timeline[i].merge(h)
            self.timeline_errors[i] += other.timeline_errors[i]


class _Recorder:
    """Counts outcomes into the phase result and its per-bucket timeline."""

    def __init__(self, res: PhaseResult, t0: float) -> None:
        self.res, self.t0 = res, t0

    def _bucket(self, now: float) -> int:
        i = max(0, int((now - self.t0) / self.res.bucket_s))
        tl = self.res.timeline
        while len(tl) <= i:
            tl.append(Histogram())
            self.res.timeline_errors.append(0)
        return i

    def ok(self, now: float, latency_s: float) -> None:
        us = int(latency_s * 1_000_000)
        self.res.ok += 1
        self.res.latency.record(us)
        self.res.timeline[self._bucket(now)].record(us)

    def error(self, now: float, kind: str) -> None:
        e = self.res.errors
        e[kind] = e.get(kind, 0) + 1
        self.res.timeline_errors[self._bucket(now)] += 1

    def response(self, now: float, status: int, latency_s: float) -> None:
        if 200 <= status < 300:
            self.ok(now, latency_s)
        else:
            self.error(now, str(status))


async def _probe(lag: Histogram, stop: asyncio.Event, res: PhaseResult,
                 sink: ProgressSink | None) -> None:
    """Measure event-loop lag (how late a short timer fires) and feed the progress display."""
    clock = time.perf_counter
    last_push = 0.0
    while not stop.is_set():
        t = clock()
        await asyncio.sleep(_PROBE_S)
        now = clock()
        lag.record_seconds(max(0.0, now - t - _PROBE_S))
        if sink is not None and now - last_push > 0.2:
            last_push = now
            sink(res.sent, res.ok, res.error_count)


async def run_phase(spec: LoadSpec, *, t0: float | None = None,
                    sink: ProgressSink | None = None) -> PhaseResult:
    """Run one phase on the current event loop and return its raw measurements."""
    if spec.mode == "open" and spec.rate <= 0:
        raise ValueError("open loop needs rate > 0")
    if spec.mode == "closed" and spec.concurrency <= 0:
        raise ValueError("closed loop needs concurrency > 0")
    target = Target.parse(spec.url)
    res = PhaseResult(spec.mode, spec.rate, spec.concurrency, spec.duration_s,
                      bucket_s=spec.bucket_s)
    clock = time.perf_counter
    # warm connections before the clock starts: connection setup is not what we measure
    n_warm = spec.concurrency if spec.mode == "closed" else min(spec.max_connections, 8)
    conns = [Connection(target) for _ in range(n_warm)]

    async def warm(c: Connection) -> None:
        try:
            await c.connect(spec.timeout_s)
            res.connections_opened += 1
        except RequestFailed:
            c.close()  # a dead server shows up as errors once requests are sent

    await asyncio.gather(*(warm(c) for c in conns))
    if t0 is None:
        t0 = clock()
    else:
        await asyncio.sleep(max(0.0, t0 - clock()))
    rec = _Recorder(res, t0)
    stop = asyncio.Event()
    cpu0 = time.process_time()
    probe = asyncio.create_task(_probe(res.loop_lag, stop, res, sink))
    try:
        if spec.mode == "open":
            await _open_loop(spec, conns, target, res, rec, t0)
        else:
            await _closed_loop(spec, conns, res, rec, t0)
    finally:
        stop.set()
        await probe
        for c in conns:
            c.close()
    res.wall_s = clock() - t0
    res.generator_cpu_s = time.process_time() - cpu0
    if sink is not None:
        sink(res.sent, res.ok, res.error_count)
    return res


async def _closed_loop(spec: LoadSpec, conns: list[Connection], res: PhaseResult,
                       rec: _Recorder, t0: float) -> None:
    clock = time.perf_counter
    t_end = t0 + spec.duration_s
    reqs = spec.requests
    n = len(reqs)

    async def worker(conn: Connection, k: int) -> None:
        while (start := clock()) < t_end:
            res.sent += 1
            try:
                status, _ = await conn.request(reqs[k % n], spec.timeout_s)
            except RequestFailed as exc:
                rec.error(clock(), exc.kind)
                if exc.kind in ("connect", "reset", "closed"):
                    await asyncio.sleep(0.01)  # do not spin on a dead server
            else:
                now = clock()
                rec.response(now, status, now - start)
            k += spec.concurrency

    await asyncio.gather(*(worker(c, i) for i, c in enumerate(conns)))


async def _open_loop(spec: LoadSpec, conns: list[Connection], target: Target,
                     res: PhaseResult, rec: _Recorder, t0: float) -> None:
    clock = time.perf_counter
    interval = 1.0 / spec.rate
    total = int(spec.duration_s * spec.rate)
    first = t0 + spec.start_offset_s
    queue: asyncio.Queue[tuple[float, int] | None] = asyncio.Queue()
    reqs = spec.requests
    n = len(reqs)
    idle = 0
    workers: list[asyncio.Task[None]] = []

    async def worker(conn: Connection) -> None:
        nonlocal idle
        while True:
            idle += 1
            item = await queue.get()
            idle -= 1
            if item is None:
                return
            t_sched, k = item
            left = spec.timeout_s - (clock() - t_sched)  # the client's deadline runs from t_sched
            if left <= 0:
                # waited longer than the timeout for a free connection: a timeout, unsent
                rec.error(clock(), "timeout")
                continue
            res.sent += 1
            try:
                status, _ = await conn.request(reqs[k % n], left)
            except RequestFailed as exc:
                rec.error(clock(), exc.kind)
            else:
                now = clock()
                rec.response(now, status, now - t_sched)

    def spawn(conn: Connection) -> None:
        workers.append(asyncio.create_task(worker(conn)))

    for c in conns:
        spawn(c)
    i = 0
    while i < total:
        due = first + i * interval
        now = clock()
        if due > now:
            # Timers have 1 ms resolution (uvloop fires shorter ones at once: a busy spin),
            # so sleep at least 1 ms and then send everything that has come due: at high
            # rates requests leave in small bursts, up to ~1 ms late (reported as lag).
            await asyncio.sleep(max(due - now, _TIMER_RESOLUTION_S))
            now = clock()
        while i < total and (due := first + i * interval) <= now:
            res.schedule_lag.record_seconds(now - due)
            queue.put_nowait((due, i))
            i += 1
        backlog = queue.qsize() - idle
        while backlog > 0 and len(workers) < spec.max_connections:
            c = Connection(target)
            conns.append(c)
            res.connections_opened += 1
            spawn(c)
            backlog -= 1
        if backlog > 0:
            res.connection_cap_hit = True
    for _ in workers:
        queue.put_nowait(None)
    done, pending = await asyncio.wait(workers, timeout=spec.timeout_s * 2 + 1.0)
    for t in pending:  # cannot happen with per-request timeouts; never hang regardless
        t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await t
    for t in done:
        if (exc := t.exception()) is not None:
            raise exc


def run_phase_sync(spec: LoadSpec, *, t0: float | None = None,
                   sink: ProgressSink | None = None) -> PhaseResult:
    """Run a phase on a fresh event loop (uvloop when installed: less generator CPU)."""
    try:
        import uvloop

        runner: Any = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        runner = asyncio.Runner()
    with runner:
        return runner.run(run_phase(spec, t0=t0, sink=sink))  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Health:
    """Could the generator deliver the requested load?

    ``ok`` is False (``reasons`` say why) when the generator itself was the limit: it used
    a whole core, or it fell behind its schedule for the typical request (median lateness).
    ``warnings`` are softer: occasional client-side delays (a busy machine) that can inflate
    the *tail* percentiles by up to ``max(schedule, loop lag p99)``.
    """

    ok: bool
    cpu_util: float
    schedule_lag_p50_ms: float
    schedule_lag_p99_ms: float
    loop_lag_p99_ms: float
    reasons: tuple[str, ...]
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "cpu_util": self.cpu_util,
                "schedule_lag_p50_ms": self.schedule_lag_p50_ms,
                "schedule_lag_p99_ms": self.schedule_lag_p99_ms,
                "loop_lag_p99_ms": self.loop_lag_p99_ms, "reasons": list(self.reasons),
                "warnings": list(self.warnings)}


def phase_health(res: PhaseResult) -> Health:
    """Judge the generator from its own CPU use, schedule lateness and event-loop lag."""
    cpu = res.generator_cpu_s / max(res.wall_s, 1e-9) / max(res.processes, 1)
    sched50 = res.schedule_lag.value_at(50) / 1000.0
    sched99 = res.schedule_lag.value_at(99) / 1000.0
    loop50 = res.loop_lag.value_at(50) / 1000.0
    loop99 = res.loop_lag.value_at(99) / 1000.0
    p99 = res.latency.value_at(99) / 1000.0
    reasons: list[str] = []
    if res.mode == "open" and sched50 > MAX_SCHEDULE_LAG_P50_MS:
        reasons.append(f"it fell behind its schedule (median request sent {sched50:.1f} ms late)")
    if loop50 > MAX_LOOP_LAG_P50_MS:
        reasons.append(f"its event loop lagged {loop50:.1f} ms typically (short of CPU)")
    if cpu > MAX_GENERATOR_CPU:
        reasons.append(f"it used {cpu:.0%} of a core per process")
    warnings: list[str] = []
    jitter = max(sched99 if res.mode == "open" else 0.0, loop99)
    if jitter > max(JITTER_WARN_MS, JITTER_WARN_RELATIVE * p99):
        warnings.append(f"client-side delays up to {jitter:.1f} ms (p99; a busy client "
                        "machine) may inflate the tail percentiles by about that much")
    return Health(not reasons, cpu, sched50, sched99, loop99, tuple(reasons), tuple(warnings))


__all__ = [
    "Health",
    "LoadSpec",
    "Mode",
    "PhaseResult",
    "ProgressSink",
    "phase_health",
    "run_phase",
    "run_phase_sync",
]

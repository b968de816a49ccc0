"""Spread one load phase over several generator processes.

One asyncio process drives a bounded number of requests per second (its ceiling is measured
in ``benchmarks/bench_loadgen.py`` and stated in the README). When the server is faster than
that, ``processes=N`` runs N generators: the open-loop schedule is interleaved (process *j*
sends requests *j*, *j+N*, ... of the global schedule) and closed-loop concurrency is split;
the histograms merge exactly. All processes start on one shared monotonic instant, after
each has opened its connections.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import threading
import time
from typing import Any

from packserve.bench.loadgen import LoadSpec, PhaseResult, ProgressSink, run_phase_sync


def _split(spec: LoadSpec, n: int) -> list[LoadSpec]:
    if spec.mode == "open":
        return [dataclasses.replace(spec, rate=spec.rate / n, start_offset_s=j / spec.rate)
                for j in range(n)]
    base, extra = divmod(spec.concurrency, n)
    return [dataclasses.replace(spec, concurrency=base + (1 if j < extra else 0))
            for j in range(n) if base + (1 if j < extra else 0) > 0]


def _child(spec: LoadSpec, idx: int, go: Any, start: Any, counts: Any, out: Any) -> None:
    def sink(sent: int, ok: int, errors: int) -> None:
        counts[3 * idx], counts[3 * idx + 1], counts[3 * idx + 2] = sent, ok, errors

    try:
        out.put((idx, "ready", None))
        if not go.wait(60):
            return
        res = run_phase_sync(spec, t0=start.value, sink=sink)
        out.put((idx, res.to_dict(), None))
    except BaseException as exc:  # report, never hang the parent
        out.put((idx, None, f"{type(exc).__name__}: {exc}"))


def _get(out: Any, procs: list[Any], deadline: float) -> tuple[int, Any, str | None]:
    """Next message from a child; fails fast when a child died without reporting."""
    import queue

    while True:
        try:
            return out.get(timeout=0.5)  # type: ignore[no-any-return]
        except queue.Empty:
            if any(p.exitcode not in (None, 0) for p in procs):
                codes = [p.exitcode for p in procs]
                raise RuntimeError(f"a generator process died (exit codes {codes})") from None
            if time.monotonic() > deadline:
                raise RuntimeError("generator processes did not report in time") from None


def run_distributed(spec: LoadSpec, processes: int, sink: ProgressSink | None = None
                    ) -> PhaseResult:
    """Run ``spec`` over ``processes`` generator processes and merge their results."""
    if processes <= 1:
        return run_phase_sync(spec, sink=sink)
    parts = _split(spec, processes)
    n = len(parts)
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    start = ctx.Value("d", 0.0)
    counts = ctx.Array("q", 3 * n, lock=False)
    out = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(p, j, go, start, counts, out), daemon=True)
             for j, p in enumerate(parts)]
    for p in procs:
        p.start()
    stop = threading.Event()
    results: list[PhaseResult] = []
    errors: list[str] = []
    try:
        deadline = time.monotonic() + 60
        for _ in procs:
            _get(out, procs, deadline)
        # children open their connections after "go", then sleep until this shared instant
        start.value = time.perf_counter() + 0.5
        go.set()
        if sink is not None:
            def pump() -> None:
                while not stop.wait(0.25):
                    sink(sum(counts[0::3]), sum(counts[1::3]), sum(counts[2::3]))
            threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + spec.duration_s + 2 * spec.timeout_s + 60
        for _ in procs:
            _, data, error = _get(out, procs, deadline)
            if error is not None:
                errors.append(error)
            else:
                results.append(PhaseResult.from_dict(data))
    finally:
        stop.set()
        go.set()
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
    if errors:
        raise RuntimeError("a generator process failed: " + "; ".join(errors))
    merged = results[0]
    for r in results[1:]:
        merged.merge(r)
    if sink is not None:
        sink(merged.sent, merged.ok, merged.error_count)
    return merged


__all__ = ["run_distributed"]

"""Tables for people (rich), JSON for machines, and the live progress display."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from packserve.bench.histogram import PERCENTILES
from packserve.bench.loadgen import ProgressSink
from packserve.bench.runner import BenchResult, FindMaxResult


def _load_label(r: BenchResult) -> str:
    p = r.phase
    if p.mode == "open":
        return f"open loop, {p.offered_rate:g} req/s offered"
    return f"closed loop, {p.concurrency} concurrent"


def render_table(result: BenchResult) -> RenderableType:
    """The final report of one run: load, throughput, latency, errors, resources, caveats."""
    r, p = result, result.phase
    lat = r.latency
    t = Table(title=f"packserve bench: {r.url}{r.path}", show_header=False, title_justify="left",
              min_width=60)
    t.add_column("metric", style="bold")
    t.add_column("value")
    t.add_row("load", f"{_load_label(r)}, {p.duration_s:g} s, batch {r.batch_size}"
              + (f", {p.processes} generator processes" if p.processes > 1 else ""))
    t.add_row("inputs", r.signature_source)
    t.add_row("requests", f"{p.sent} sent, {p.ok} ok, {p.error_count} errors "
              f"({r.error_rate:.2%})")
    if r.images_per_s is not None:
        t.add_row("throughput", f"{r.throughput:,.1f} req/s ({r.images_per_s:,.1f} images/s)")
    else:
        t.add_row("throughput", f"{r.throughput:,.1f} req/s"
                  + (f" ({r.rows_per_s:,.0f} rows/s)" if r.batch_size > 1 else ""))
    basis = "from scheduled send time" if p.mode == "open" else "per request"
    for q in PERCENTILES:
        key = f"p{q:g}"
        t.add_row(f"latency {key}", f"{lat.percentiles_ms[key]:.2f} ms")
    t.add_row("latency max", f"{lat.max_ms:.2f} ms  ({basis}; successful responses)")
    if p.errors:
        t.add_row("errors", ", ".join(f"{k}: {v}" for k, v in sorted(p.errors.items())))
    mem = r.resources.rss_mib()
    if mem is not None:
        t.add_row("server memory", f"RSS {mem['start']:.1f} -> {mem['end']:.1f} MiB "
                  f"(peak {mem['peak']:.1f})  [{r.resources.source}]")
    cpu = r.resources.cpu_cores()
    if cpu is not None:
        t.add_row("server CPU", f"{cpu:.2f} cores")
    g = r.memory_growth()
    if r.soak and g is not None:
        verdict = "LEAK SUSPECTED" if r.leak_suspected() else "no leak detected"
        t.add_row("memory growth", f"{g['growth_mib']:+.1f} MiB after warm-up, "
                  f"{g['slope_mib_per_min']:+.2f} MiB/min: {verdict}")
    h = r.health
    lag = (f", sends late by p50 {h.schedule_lag_p50_ms:.1f} / p99 {h.schedule_lag_p99_ms:.1f} ms"
           if p.mode == "open" else f", loop lag p99 {h.loop_lag_p99_ms:.1f} ms")
    gen = (f"kept up (CPU {h.cpu_util:.0%}/process{lag})" if h.ok
           else "[bold red]COULD NOT KEEP UP[/]")
    t.add_row("generator", gen)
    if not r.notes:
        return t
    notes = Text("\n".join(f"* {n}" for n in r.notes), style="yellow")
    return Group(t, notes)


def render_find_max(result: FindMaxResult) -> RenderableType:
    """The ramp curve as a table plus the verdict."""
    t = Table(title="packserve bench --find-max", title_justify="left")
    for col in ("offered req/s", "achieved req/s", "p50 ms", "p95 ms", "p99 ms", "p99.9 ms",
                "errors", "verdict"):
        t.add_column(col, justify="right" if col != "verdict" else "left")
    for s, ok, why in zip(result.steps, result.passed, result.reasons, strict=True):
        pc = s.latency.percentiles_ms
        t.add_row(f"{s.phase.offered_rate:,.1f}", f"{s.throughput:,.1f}", f"{pc['p50']:.2f}",
                  f"{pc['p95']:.2f}", f"{pc['p99']:.2f}", f"{pc['p99.9']:.2f}",
                  f"{s.error_rate:.2%}", ("[green]" if ok else "[red]") + why + "[/]")
    best = result.best
    head = (f"max sustainable throughput: [bold]{result.max_throughput:,.1f} req/s[/]"
            if best else "[red]no step was sustainable[/]")
    if result.generator_limited:
        head += " [yellow](lower bound: the load generator ran out first)[/]"
    crit = f"criteria: errors <= {result.max_error_rate:.1%}" + (
        f", p99 <= {result.slo_p99_ms:g} ms" if result.slo_p99_ms is not None else "")
    return Group(t, Text.from_markup(head), Text(f"{crit}; stopped {result.stop_reason}"))


def to_json(obj: BenchResult | FindMaxResult) -> str:
    return json.dumps(obj.to_dict(), indent=2, default=str)


class _LiveState:
    def __init__(self, title: str, duration: float) -> None:
        self.title, self.duration = title, duration
        self.start = time.perf_counter()
        self.sent = self.ok = self.errors = 0
        self._last: tuple[float, int] = (self.start, 0)
        self.rate = 0.0
        self.lock = threading.Lock()

    def sink(self, sent: int, ok: int, errors: int) -> None:
        with self.lock:
            now = time.perf_counter()
            t_last, ok_last = self._last
            if now - t_last >= 0.5:
                self.rate = (ok - ok_last) / (now - t_last)
                self._last = (now, ok)
            self.sent, self.ok, self.errors = sent, ok, errors

    def render(self) -> RenderableType:
        with self.lock:
            el = time.perf_counter() - self.start
            frac = min(1.0, el / self.duration) if self.duration else 1.0
            bar = "#" * int(frac * 30)
            return Text(f"{self.title}  [{bar:<30}] {el:5.1f}/{self.duration:g}s  "
                        f"sent {self.sent}  ok {self.ok}  errors {self.errors}  "
                        f"{self.rate:,.0f} ok/s")


def live_progress(console: Console) -> Any:
    """A progress factory for ``run_bench(progress=...)``: one live line per phase."""

    @contextlib.contextmanager
    def factory(title: str, duration: float) -> Iterator[ProgressSink]:
        state = _LiveState(title, duration)

        class _View:
            def __rich__(self) -> RenderableType:
                return state.render()

        with Live(_View(), console=console, refresh_per_second=4, transient=True):
            yield state.sink

    return factory


__all__ = ["live_progress", "render_find_max", "render_table", "to_json"]

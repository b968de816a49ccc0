"""bench: p50/p95/p99 at a rate, maximum sustainable throughput, memory under load.

Talks HTTP to any server (never imports ``packserve.serve``). Open-loop latency is measured
from each request's scheduled send time (no coordinated omission); the generator reports
when it, rather than the server, was the limit.

    result = run_bench("http://127.0.0.1:8000", rate=200, duration=10)
    Console().print(render_table(result))
"""

from __future__ import annotations

from packserve.bench.histogram import Histogram, Summary
from packserve.bench.html import render_html, write_html
from packserve.bench.inputs import Signature, build_bodies
from packserve.bench.locustgen import locustfile_for, render_locustfile
from packserve.bench.ramp import find_max
from packserve.bench.report import live_progress, render_find_max, render_table, to_json
from packserve.bench.runner import (
    BenchResult,
    FindMaxResult,
    resolve_signature,
    run_bench,
    soak,
)

__all__ = [
    "BenchResult",
    "FindMaxResult",
    "Histogram",
    "Signature",
    "Summary",
    "build_bodies",
    "find_max",
    "live_progress",
    "locustfile_for",
    "render_find_max",
    "render_html",
    "render_locustfile",
    "render_table",
    "resolve_signature",
    "run_bench",
    "soak",
    "to_json",
    "write_html",
]

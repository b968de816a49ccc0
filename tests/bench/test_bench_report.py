"""Verdicts and rendering from hand-built measurements (no server): health, leak, outputs."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from rich.console import Console

from packserve.bench.histogram import Histogram
from packserve.bench.html import render_html
from packserve.bench.loadgen import PhaseResult, phase_health
from packserve.bench.report import render_find_max, render_table, to_json
from packserve.bench.resources import MIB, ResourceSeries, parse_process_metrics
from packserve.bench.runner import BenchResult, FindMaxResult, _annotate, parse_duration
from packserve.bench.svg import Series, line_chart
from packserve.errors import ConfigError


def phase(rate: float = 100.0, *, lat_ms: float = 10.0, lag_ms: float = 0.5,
          cpu_s: float = 0.2, errors: dict[str, int] | None = None) -> PhaseResult:
    n = int(rate * 2)  # the server kept up with the offered rate for 2 s
    p = PhaseResult("open", rate, 0, 2.0, wall_s=2.0, sent=n, ok=n, bucket_s=1.0)
    p.errors = dict(errors or {})
    p.generator_cpu_s = cpu_s
    for i in range(n):
        p.latency.record_seconds(lat_ms / 1000 * (1 + (i % 10) / 10))
        p.schedule_lag.record_seconds(lag_ms / 1000)
        p.loop_lag.record_seconds(lag_ms / 1000)
    p.timeline = [Histogram(), Histogram()]
    p.timeline_errors = [0, 0]
    for i in range(n):
        p.timeline[i % 2].record(10_000)
    return p


def result(p: PhaseResult, samples: list[tuple[float, float, float]] | None = None,
           soak: bool = False) -> BenchResult:
    r = BenchResult("http://h:1", None, "/predict", "test", 1, p, phase_health(p),
                    ResourceSeries("test", samples or []), soak=soak)
    _annotate(r)
    return r


def test_generator_health_verdicts() -> None:
    assert phase_health(phase()).ok
    busy = phase_health(phase(cpu_s=1.95))
    assert not busy.ok and "core" in busy.reasons[0]
    behind = phase_health(phase(lag_ms=20))
    assert not behind.ok and "behind its schedule" in behind.reasons[0]
    jitter = phase(lag_ms=0.5)
    for _ in range(10):
        jitter.loop_lag.record_seconds(0.030)  # occasional 30 ms delay: tail only
    h = phase_health(jitter)
    assert h.ok and h.warnings and "30" in h.warnings[0]
    r = result(phase(cpu_s=1.95))
    assert r.generator_limited and any("could not keep up" in n for n in r.notes)


def test_phase_merge_and_roundtrip() -> None:
    a, b = phase(50), phase(50, errors={"503": 3})
    b2 = PhaseResult.from_dict(json.loads(json.dumps(b.to_dict())))
    assert b2.to_dict() == b.to_dict()
    a.merge(b2)
    assert a.offered_rate == 100 and a.sent == 200 and a.processes == 2
    assert a.errors == {"503": 3} and a.latency.count == 200


def test_leak_verdict_from_memory_samples() -> None:
    flat = [(t * 0.5, 100 * MIB + (t % 2) * 0.1 * MIB, t * 0.1) for t in range(40)]
    growing = [(t * 0.5, 100 * MIB + t * 1.0 * MIB, t * 0.1) for t in range(40)]
    assert result(phase(), flat, soak=True).leak_suspected() is False
    leak = result(phase(), growing, soak=True)
    assert leak.leak_suspected() is True
    g = leak.memory_growth()
    assert g is not None and g["slope_mib_per_min"] == pytest.approx(120, rel=0.01)
    assert any("leak suspected" in n for n in leak.notes)
    assert result(phase(), growing).leak_suspected() is None  # only judged in a soak
    cpu = ResourceSeries("x", growing).cpu_cores()
    assert cpu == pytest.approx(0.2)


def test_prometheus_process_metrics_parsing() -> None:
    text = ("# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
            "# TYPE process_resident_memory_bytes gauge\n"
            "process_resident_memory_bytes 1.5e+08\n"
            'process_resident_memory_bytes{pid="2"} 5e+07\n'
            "process_cpu_seconds_total 12.5\n"
            "process_virtual_memory_bytes 9e9\n")
    assert parse_process_metrics(text) == (2e8, 12.5)
    assert parse_process_metrics("up 1\n") == (None, None)


def test_durations() -> None:
    assert parse_duration("30s") == 30 and parse_duration("500ms") == 0.5
    assert parse_duration("2m") == 120 and parse_duration("1.5") == 1.5
    assert parse_duration("1h") == 3600
    for bad in ("soon", "-1s", "0"):
        with pytest.raises(ConfigError):
            parse_duration(bad)


def _text(renderable: object) -> str:
    c = Console(record=True, width=140)
    c.print(renderable)
    return c.export_text()


def test_table_json_and_html_render_what_was_measured() -> None:
    samples = [(t * 0.5, (100 + t) * MIB, t * 0.1) for t in range(8)]
    r = result(phase(errors={"503": 4, "timeout": 1}), samples)
    text = _text(render_table(r))
    for needle in ("100 req/s offered", "p99.9", "503: 4", "timeout: 1", "RSS 100.0 -> 107.0",
                   "0.20 cores", "kept up"):
        assert needle in text
    data = json.loads(to_json(r))
    assert data["errors"] == {"503": 4, "timeout": 1}
    assert data["latency"]["percentiles_ms"]["p50"] == pytest.approx(14, rel=0.02)
    html = render_html(r)
    svgs = html.split("<svg")[1:]
    assert len(svgs) == 5  # percentiles, throughput, latency, memory, CPU over time
    for s in svgs:
        ET.fromstring("<svg" + s.split("</svg>")[0] + "</svg>")  # well-formed

    steps = [result(phase(rate)) for rate in (100, 200, 300)]
    fm = FindMaxResult(steps, [True, True, False], ["sustained", "sustained", "p99 > SLO"],
                       None, 50.0, 0.01, "at 300 req/s offered: p99 > SLO", False)
    assert fm.best is steps[1]
    ftext = _text(render_find_max(fm))
    assert "max sustainable throughput" in ftext and "p99 > SLO" in ftext
    assert json.loads(to_json(fm))["max_offered_rate"] == 200
    assert "Latency percentiles vs offered rate" in render_html(fm)


def test_svg_chart_edge_cases() -> None:
    empty = line_chart([Series("a", [])], title="t", xlabel="x", ylabel="y")
    assert "no data" in empty
    one = line_chart([Series("a<b", [(1.0, 2.0)])], title="t&", xlabel="x", ylabel="y")
    ET.fromstring(one)  # escaped, well-formed, a single point is drawn as a marker
    assert "<circle" in one

"""A self-contained HTML report: one file, inline SVG charts, opens in any browser."""

from __future__ import annotations

import itertools
import math
import time
from html import escape
from pathlib import Path

from packserve import __version__
from packserve.bench.histogram import PERCENTILES
from packserve.bench.resources import MIB
from packserve.bench.runner import BenchResult, FindMaxResult
from packserve.bench.svg import Series, line_chart

_CSS = """body{font-family:sans-serif;margin:16px 24px;color:#222}
table{border-collapse:collapse;margin:12px 0}td,th{border:1px solid #ccc;padding:4px 10px;
text-align:right}td:first-child,th:first-child{text-align:left}.note{color:#a15c00}
.meta{color:#555;margin:-8px 0 8px}table.summary td{text-align:left}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:16px}
.charts svg{display:block;width:100%;height:auto}.bad{color:#b00}.good{color:#070}"""


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def _meta(started_at: float) -> str:
    """When the load ran (or, if unknown, when the report was made) and by which packserve."""
    when = (f"run {_when(started_at)}" if started_at > 0
            else f"report generated {_when(time.time())}")
    return f'<p class="meta">{escape(when)} · packserve {escape(__version__)}</p>'


def _generator(r: BenchResult) -> str:
    """The load generator's own lag: how late requests left and how late its loop ran."""
    h = r.health
    lag = (f"sends late by p50 {h.schedule_lag_p50_ms:.1f} / p99 {h.schedule_lag_p99_ms:.1f} ms, "
           if r.phase.mode == "open" else "")
    detail = f"CPU {h.cpu_util:.0%}/process, {lag}event-loop lag p99 {h.loop_lag_p99_ms:.1f} ms"
    if h.ok:
        return f"kept up ({detail})"
    return "COULD NOT KEEP UP: " + "; ".join(h.reasons) + f" ({detail})"


def _pct_axis(curve: list[tuple[float, float]]) -> tuple[list[tuple[float, float]],
                                                           list[tuple[float, str]]]:
    def x(p: float) -> float:
        return math.log10(1.0 / max(1e-6, 1.0 - p / 100.0))

    ticks = [(x(p), label) for p, label in ((0, "0%"), (90, "90%"), (99, "99%"),
                                            (99.9, "99.9%"), (99.99, "99.99%"))]
    return [(x(p), v) for p, v in curve], ticks


def _timeline(runs: list[BenchResult]) -> dict[str, list[tuple[float, float]]]:
    """Throughput, latency and server resources over time, runs laid end to end."""
    out: dict[str, list[tuple[float, float]]] = {k: [] for k in
                                                 ("ok", "err", "p50", "p99", "rss", "cpu")}
    offset = 0.0
    for r in runs:
        for row in r.timeline():
            t = offset + row["t"]
            out["ok"].append((t, row["ok_per_s"]))
            out["err"].append((t, row["errors_per_s"]))
            if row["ok_per_s"] > 0:
                out["p50"].append((t, row["p50_ms"]))
                out["p99"].append((t, row["p99_ms"]))
        s = r.resources.samples
        out["rss"].extend((offset + t, rss / MIB) for t, rss, _ in s)
        out["cpu"].extend((offset + (t0 + t1) / 2, (c1 - c0) / (t1 - t0))
                          for (t0, _, c0), (t1, _, c1) in itertools.pairwise(s) if t1 > t0)
        offset += r.phase.wall_s
    return out


def _time_charts(runs: list[BenchResult]) -> list[str]:
    tl = _timeline(runs)
    charts = [
        line_chart([Series("ok/s", tl["ok"]), Series("errors/s", tl["err"], "#d62728")],
                   title="Throughput over time", xlabel="seconds", ylabel="responses/s"),
        line_chart([Series("p50", tl["p50"]), Series("p99", tl["p99"], "#d62728")],
                   title="Latency over time", xlabel="seconds", ylabel="ms"),
    ]
    if tl["rss"]:
        charts.append(line_chart([Series("RSS", tl["rss"], "#9467bd")], y_from_zero=False,
                                 title="Server memory over time", xlabel="seconds",
                                 ylabel="MiB"))
    if tl["cpu"]:
        charts.append(line_chart([Series("CPU", tl["cpu"], "#8c564b")],
                                 title="Server CPU over time", xlabel="seconds", ylabel="cores"))
    return charts


def _summary_rows(r: BenchResult) -> list[tuple[str, str]]:
    p, lat = r.phase, r.latency
    load = (f"open loop, {p.offered_rate:g} req/s offered" if p.mode == "open"
            else f"closed loop, {p.concurrency} concurrent")
    rows = [("target", f"{r.url}{r.path}"), ("load", f"{load}, {p.duration_s:g} s, batch "
                                              f"{r.batch_size}"),
            ("inputs", r.signature_source),
            ("requests", f"{p.sent} sent, {p.ok} ok, {p.error_count} errors ({r.error_rate:.2%})"),
            ("throughput", f"{r.throughput:,.1f} req/s ({r.rows_per_s:,.0f} {r.unit}/s)")]
    rows += [(f"latency p{q:g}", f"{lat.percentiles_ms[f'p{q:g}']:.2f} ms") for q in PERCENTILES]
    rows.append(("latency max", f"{lat.max_ms:.2f} ms"))
    if p.errors:
        rows.append(("errors", ", ".join(f"{k}: {v}" for k, v in sorted(p.errors.items()))))
    mem = r.resources.rss_mib()
    if mem:
        rows.append(("server RSS", f"{mem['start']:.1f} -> {mem['end']:.1f} MiB "
                     f"(peak {mem['peak']:.1f})"))
    cpu = r.resources.cpu_cores()
    if cpu is not None:
        rows.append(("server CPU", f"{cpu:.2f} cores"))
    g = r.memory_growth()
    if r.soak and g:
        rows.append(("memory growth", f"{g['growth_mib']:+.1f} MiB after warm-up "
                     f"({g['slope_mib_per_min']:+.2f} MiB/min): "
                     + ("LEAK SUSPECTED" if r.leak_suspected() else "no leak detected")))
    rows.append(("generator", _generator(r)))
    return rows


def _table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="summary">{body}</table>'


def _notes(notes: list[str]) -> str:
    return "".join(f'<p class="note">{escape(n)}</p>' for n in notes)


def render_html(obj: BenchResult | FindMaxResult, title: str = "packserve bench") -> str:
    """The report as one HTML string (no external resources)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{escape(title)}</h1>"]
    first = obj if isinstance(obj, BenchResult) else (obj.steps[0] if obj.steps else None)
    parts.append(_meta(first.started_at if first is not None else 0.0))
    if isinstance(obj, BenchResult):
        parts.append(_table(_summary_rows(obj)) + _notes(obj.notes))
        xs, ticks = _pct_axis(obj.phase.latency.percentile_curve())
        charts = [line_chart([Series("latency", xs)], title="Latency by percentile",
                             xlabel="percentile", ylabel="ms", xticks=ticks)]
        charts += _time_charts([obj])
    else:
        parts.append(_find_max_section(obj))
        steps = obj.steps
        off = [s.phase.offered_rate for s in steps]
        lat = [Series(f"p{q:g}", [(o, s.latency.percentiles_ms[f"p{q:g}"])
                                  for o, s in zip(off, steps, strict=True)])
               for q in (50.0, 95.0, 99.0, 99.9)]
        charts = [
            line_chart(lat, title="Latency percentiles vs offered rate",
                       xlabel="offered req/s", ylabel="ms", markers=True),
            line_chart([Series("achieved", [(o, s.throughput)
                                            for o, s in zip(off, steps, strict=True)]),
                        Series("offered", [(o, o) for o in off], "#999", dashed=True)],
                       title="Achieved vs offered throughput", xlabel="offered req/s",
                       ylabel="req/s", markers=True),
        ]
        charts += _time_charts(steps)
    parts.append('<div class="charts">' + "".join(f"<div>{c}</div>" for c in charts) + "</div>")
    parts.append("<p>Open-loop latency is measured from each request's scheduled send time, so "
                 "queueing in the server shows up (no coordinated omission).</p></body></html>")
    return "".join(parts)


def _find_max_section(fm: FindMaxResult) -> str:
    head = ("<p><b>max sustainable throughput: "
            f"{fm.max_throughput:,.1f} req/s</b>"
            + (" (lower bound: the load generator ran out first)" if fm.generator_limited
               else "") + f"<br>stopped {escape(fm.stop_reason)}</p>")
    cols = ["offered req/s", "achieved req/s", "p50 ms", "p95 ms", "p99 ms", "p99.9 ms",
            "errors", "sends late p50 / p99 ms", "verdict"]
    rows = []
    for s, ok, why in zip(fm.steps, fm.passed, fm.reasons, strict=True):
        pc = s.latency.percentiles_ms
        cls = "good" if ok else "bad"
        rows.append(f"<tr><td>{s.phase.offered_rate:,.1f}</td><td>{s.throughput:,.1f}</td>"
                    f"<td>{pc['p50']:.2f}</td><td>{pc['p95']:.2f}</td><td>{pc['p99']:.2f}</td>"
                    f"<td>{pc['p99.9']:.2f}</td><td>{s.error_rate:.2%}</td>"
                    f"<td>{s.health.schedule_lag_p50_ms:.1f} / {s.health.schedule_lag_p99_ms:.1f}</td>"
                    f'<td class="{cls}">{escape(why)}</td></tr>')
    th = "".join(f"<th>{c}</th>" for c in cols)
    return head + f"<table><tr>{th}</tr>{''.join(rows)}</table>"


def write_html(obj: BenchResult | FindMaxResult, path: str | Path,
               title: str = "packserve bench") -> Path:
    out = Path(path)
    out.write_text(render_html(obj, title), encoding="utf-8")
    return out


__all__ = ["render_html", "write_html"]

"""Tiny self-contained SVG line charts (no plotting dependency, no external assets)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

_CHAR_W = 6.6  # a generous width of one 11 px sans-serif character (digits, '%', '.')

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


@dataclass
class Series:
    name: str
    points: list[tuple[float, float]]
    color: str = ""
    dashed: bool = False


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    start = math.floor(lo / step) * step
    ticks, v = [round(start, 10)], start
    while v < hi - step * 1e-6:  # the last tick is at or above the data's maximum
        v += step
        ticks.append(round(v, 10))
    return ticks


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.0f}"
    return f"{v:.3g}"


def _tick_anchor(x: float, label: str, width: int) -> tuple[float, str]:
    """Keep an x tick label inside the chart: a centred label that would run past an edge
    (the "99.99%" tick sits on the right border) is aligned to that edge instead."""
    half = len(label) * _CHAR_W / 2
    if x + half > width - 2:
        return width - 2.0, "end"
    if x - half < 2:
        return 2.0, "start"
    return x, "middle"


def line_chart(series: list[Series], *, title: str, xlabel: str, ylabel: str,
               width: int = 640, height: int = 300,
               xticks: list[tuple[float, str]] | None = None, y_from_zero: bool = True,
               markers: bool = False) -> str:
    """An SVG line chart; ``xticks`` overrides the x axis labels (e.g. percentile axes)."""
    ml, mr, mt, mb = 64, 16, 32, 44
    pw, ph = width - ml - mr, height - mt - mb
    pts = [p for s in series for p in s.points if math.isfinite(p[0]) and math.isfinite(p[1])]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="13" '
           f'font-weight="bold">{escape(title)}</text>']
    if not pts:
        out.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no data</text>')
        return "".join(out) + "</svg>"
    x0 = min(p[0] for p in pts)
    x1 = max(p[0] for p in pts)
    y0 = 0.0 if y_from_zero else min(p[1] for p in pts)
    y1 = max(p[1] for p in pts)
    yt = _nice_ticks(y0, y1 * 1.05 if y1 > 0 else 1.0)
    y0, y1 = yt[0], yt[-1]
    if xticks is None:
        xt = _nice_ticks(x0, x1)
        x0, x1 = xt[0], xt[-1]
        xlabels = [(v, _fmt(v)) for v in xt]
    else:
        xlabels = xticks
        x0 = min(x0, *(v for v, _ in xticks))
        x1 = max(x1, *(v for v, _ in xticks))
    x1 = x1 if x1 > x0 else x0 + 1.0

    def sx(x: float) -> float:
        return ml + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return mt + ph - (y - y0) / ((y1 - y0) or 1.0) * ph

    for v in yt:
        out.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{sy(v):.1f}" y2="{sy(v):.1f}" '
                   'stroke="#e5e5e5"/>')
        out.append(f'<text x="{ml - 6}" y="{sy(v) + 4:.1f}" text-anchor="end">{_fmt(v)}</text>')
    for v, label in xlabels:
        out.append(f'<line x1="{sx(v):.1f}" x2="{sx(v):.1f}" y1="{mt}" y2="{mt + ph}" '
                   'stroke="#f0f0f0"/>')
        tx, anchor = _tick_anchor(sx(v), label, width)
        out.append(f'<text x="{tx:.1f}" y="{mt + ph + 16}" text-anchor="{anchor}">'
                   f'{escape(label)}</text>')
    out.append(f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    out.append(f'<text x="{ml + pw / 2}" y="{height - 6}" text-anchor="middle">'
               f'{escape(xlabel)}</text>')
    out.append(f'<text x="14" y="{mt + ph / 2}" text-anchor="middle" '
               f'transform="rotate(-90 14 {mt + ph / 2})">{escape(ylabel)}</text>')
    for i, s in enumerate(series):
        color = s.color or PALETTE[i % len(PALETTE)]
        good = [p for p in s.points if math.isfinite(p[0]) and math.isfinite(p[1])]
        if not good:
            continue
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in good)
        dash = ' stroke-dasharray="5,4"' if s.dashed else ""
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" '
                   f'stroke-width="1.8"{dash}/>')
        if markers or len(good) == 1:
            out.extend(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}"/>'
                       for x, y in good)
        ly = mt + 14 + 14 * i
        out.append(f'<rect x="{ml + 8}" y="{ly - 8}" width="10" height="3" fill="{color}"/>')
        out.append(f'<text x="{ml + 22}" y="{ly - 4}">{escape(s.name)}</text>')
    return "".join(out) + "</svg>"


__all__ = ["Series", "line_chart"]

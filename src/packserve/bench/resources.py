"""The server's memory and CPU over a run, sampled from ``/metrics`` or from a pid.

Sampling runs on a thread of the bench process, a few times a second, so it costs the load
generator almost nothing. ``/metrics`` works across machines (Prometheus process collector:
``process_resident_memory_bytes``, ``process_cpu_seconds_total``; series with labels, e.g. one
per worker, are summed). ``--pid`` (psutil) covers the process *and its children*, which is
what a multi-worker server is.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

RSS = "process_resident_memory_bytes"
CPU = "process_cpu_seconds_total"
MIB = 1024 * 1024


def parse_process_metrics(text: str) -> tuple[float | None, float | None]:
    """(rss bytes, cpu seconds) summed over all series of each metric, None when absent."""
    rss: float | None = None
    cpu: float | None = None
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name not in (RSS, CPU):
            continue
        try:
            value = float(line.rsplit(None, 2)[-1] if "}" not in line
                          else line.rsplit("}", 1)[1].split()[0])
        except (ValueError, IndexError):
            continue
        if name == RSS:
            rss = (rss or 0.0) + value
        else:
            cpu = (cpu or 0.0) + value
    return rss, cpu


@dataclass
class ResourceSeries:
    """Samples of (seconds since start, rss bytes, cpu seconds)."""

    source: str | None
    samples: list[tuple[float, float, float]] = field(default_factory=list)
    note: str = ""

    def rss_mib(self) -> dict[str, float] | None:
        if not self.samples:
            return None
        rss = [s[1] / MIB for s in self.samples]
        return {"start": rss[0], "end": rss[-1], "peak": max(rss), "mean": statistics.fmean(rss)}

    def cpu_cores(self) -> float | None:
        """Mean CPU use over the run, in cores (1.0 = one core fully busy)."""
        if len(self.samples) < 2:
            return None
        (t0, _, c0), (t1, _, c1) = self.samples[0], self.samples[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else None

    def growth(self, warmup_fraction: float = 0.2) -> dict[str, float] | None:
        """Memory growth after a warm-up: slope (MiB/min) and first vs last third (MiB)."""
        pts = self.samples[int(len(self.samples) * warmup_fraction):]
        if len(pts) < 6:
            return None
        ts = [p[0] for p in pts]
        ms = [p[1] / MIB for p in pts]
        slope = statistics.linear_regression(ts, ms).slope if len(set(ts)) > 1 else 0.0
        third = len(ms) // 3
        first = statistics.median(ms[:third])
        last = statistics.median(ms[-third:])
        return {"slope_mib_per_min": slope * 60.0, "first_third_mib": first,
                "last_third_mib": last, "growth_mib": last - first}

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "note": self.note, "rss_mib": self.rss_mib(),
                "cpu_cores": self.cpu_cores(), "growth": self.growth(),
                "samples": [{"t": t, "rss_bytes": r, "cpu_seconds": c} for t, r, c in self.samples]}


class ResourceSampler:
    """Background thread sampling a server's RSS and CPU until :meth:`stop`."""

    def __init__(self, *, metrics_url: str | None = None, pid: int | None = None,
                 interval_s: float = 0.5) -> None:
        self.metrics_url, self.pid, self.interval_s = metrics_url, pid, interval_s
        source = f"pid {pid} (+children)" if pid is not None else (
            f"{metrics_url}" if metrics_url else None)
        self.series = ResourceSeries(source)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def start(self, t0: float | None = None) -> None:
        if self.series.source is None:
            self.series.note = "no resource source (the server has no /metrics; pass --pid)"
            return
        self._t0 = time.perf_counter() if t0 is None else t0
        self._thread = threading.Thread(target=self._run, name="bench-resources", daemon=True)
        self._thread.start()

    def stop(self) -> ResourceSeries:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._sample_once()  # a final sample at the very end of the run
        return self.series

    def _run(self) -> None:
        self._sample_once()
        while not self._stop.wait(self.interval_s):
            self._sample_once()

    def _sample_once(self) -> None:
        try:
            value = self._read_pid() if self.pid is not None else self._read_metrics()
        except Exception as exc:  # a sampling failure must not abort the bench
            self.series.note = f"resource sampling failed: {type(exc).__name__}"
            return
        if value is None:
            return
        self.series.samples.append((time.perf_counter() - self._t0, value[0], value[1]))

    def _read_metrics(self) -> tuple[float, float] | None:
        import httpx

        assert self.metrics_url is not None
        r = httpx.get(self.metrics_url, timeout=2.0)
        if r.status_code != 200:
            self.series.note = f"GET /metrics answered {r.status_code}; pass --pid for memory"
            return None
        rss, cpu = parse_process_metrics(r.text)
        if rss is None or cpu is None:
            self.series.note = ("/metrics has no process_resident_memory_bytes / "
                                "process_cpu_seconds_total; pass --pid")
            return None
        return rss, cpu

    def _read_pid(self) -> tuple[float, float] | None:
        import psutil

        assert self.pid is not None
        root = psutil.Process(self.pid)
        rss = cpu = 0.0
        for p in [root, *root.children(recursive=True)]:
            try:
                rss += p.memory_info().rss
                t = p.cpu_times()
                cpu += t.user + t.system
            except psutil.NoSuchProcess:
                continue
        return rss, cpu


__all__ = ["ResourceSampler", "ResourceSeries", "parse_process_metrics"]

"""``/metrics`` of a ``--workers N`` server: the whole server's numbers, from any worker.

Three sources, merged at scrape time by whichever worker the kernel handed the scrape to:

1. prometheus_client's multiprocess files (``PROMETHEUS_MULTIPROC_DIR``) for the metric
   objects (``Counter``/``Histogram``/``Gauge`` of :class:`~packserve.serve.metrics.Metrics`):
   counters and histograms summed over all workers, dead ones included; gauges per their
   ``multiprocess_mode``. Function-backed gauges (``set_function``) are never written to
   those files, so :func:`publish_gauges` copies their values in (every tick and at scrape).
2. Snapshots of *collector-based* families (custom collectors such as the batcher's, which
   keep plain Python numbers and build families per scrape): each worker writes its own to
   ``collected_<pid>.json`` once a second and at exit (:func:`publish_collected`); the merge
   sums samples with equal name and labels — counters and histograms over every worker that
   ever ran, gauges over the live ones.
3. ``process_*``: summed over the supervisor and its live workers (:class:`ServerProcessCollector`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Gauge

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_SKIP_PREFIXES = ("process_", "python_")
_ACCUMULATING = frozenset({"counter", "histogram", "summary", "gaugehistogram"})


class Metrics(Protocol):
    """What the merge needs of :class:`packserve.serve.metrics.Metrics` (which calls in here for
    ``/metrics``): a protocol, so this module does not import back up into it."""

    @property
    def registry(self) -> CollectorRegistry: ...
    @property
    def in_flight(self) -> Gauge: ...
    @property
    def draining(self) -> Gauge: ...


def _folder() -> Path:
    return Path(os.environ[MULTIPROC_ENV])


def publish_gauges(metrics: Metrics) -> None:
    """Write this process's function-backed gauges into its multiprocess file."""
    for gauge in (metrics.in_flight, metrics.draining):
        for family in gauge.collect():
            for sample in family.samples:
                gauge.set(sample.value)


def _file_backed_names() -> set[str]:
    from prometheus_client.multiprocess import MultiProcessCollector

    files = [str(p) for p in _folder().glob("*.db")]
    merged = MultiProcessCollector.merge(files, accumulate=False)  # type: ignore[no-untyped-call]
    return {m.name for m in merged}


def publish_collected(metrics: Metrics) -> None:
    """Snapshot this worker's collector-based families (not in the multiprocess files)."""
    skip = _file_backed_names()
    fams = []
    for fam in metrics.registry.collect():
        if fam.name in skip or fam.name.startswith(_SKIP_PREFIXES):
            continue
        fams.append({"name": fam.name, "type": fam.type, "doc": fam.documentation,
                     "samples": [[s.name, s.labels, s.value] for s in fam.samples]})
    path = _folder() / f"collected_{os.getpid()}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(fams))
    tmp.replace(path)  # atomic: a scrape never reads half a file


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - exists, owned by someone else
        return True
    return True


class CollectedSnapshots:
    """Sums the workers' snapshots (see module docstring)."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import Metric

        merged: dict[str, tuple[str, str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]] = {}
        for path in sorted(_folder().glob("collected_*.json")):
            pid = int(path.stem.split("_")[1])
            live = _alive(pid)
            try:
                fams = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            for fam in fams:
                if not live and fam["type"] not in _ACCUMULATING:
                    continue  # a dead worker's gauges say nothing about the server any more
                _, _, values = merged.setdefault(fam["name"], (fam["type"], fam["doc"], {}))
                for name, labels, value in fam["samples"]:
                    key = (name, tuple(sorted(labels.items())))
                    values[key] = values.get(key, 0.0) + float(value)
        for fam_name, (typ, doc, values) in merged.items():
            metric = Metric(fam_name, doc, typ)
            for (name, labels), value in values.items():
                metric.add_sample(name, dict(labels), value)
            yield metric


def _server_processes() -> list[Any]:
    """The supervisor (our parent) and all its children; just us when run on our own."""
    import psutil

    me = psutil.Process()
    parent = me.parent()
    if parent is None or parent.pid == 1:
        return [me]
    try:
        children = parent.children()
    except psutil.Error:
        return [me]
    return [parent, *children]


class ServerProcessCollector:
    """``process_*`` metrics summed over the supervisor and its workers."""

    def collect(self) -> Iterable[Any]:
        import psutil
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        rss = vms = cpu = fds = 0.0
        live = 0
        start = None
        for i, p in enumerate(_server_processes()):
            try:
                with p.oneshot():
                    mem, times = p.memory_info(), p.cpu_times()
                    rss += mem.rss
                    vms += mem.vms
                    cpu += times.user + times.system
                    fds += p.num_fds()
                    if i == 0:
                        start = p.create_time()
                    else:
                        live += 1
            except psutil.Error:
                continue
        yield GaugeMetricFamily("process_resident_memory_bytes",
                                "resident memory of the supervisor and all workers", value=rss)
        yield GaugeMetricFamily("process_virtual_memory_bytes",
                                "virtual memory of the supervisor and all workers", value=vms)
        yield CounterMetricFamily("process_cpu_seconds_total",
                                  "CPU seconds of the supervisor and the live workers", value=cpu)
        yield GaugeMetricFamily("process_open_fds", "open fds of the supervisor and all workers",
                                value=fds)
        if start is not None:
            yield GaugeMetricFamily("process_start_time_seconds",
                                    "start of the supervisor (unix time)", value=start)
        yield GaugeMetricFamily("packserve_workers", "live worker processes", value=live)


def render_all_workers(metrics: Metrics) -> bytes:
    """The exposition of the whole server, from the shared multiprocess folder."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    publish_gauges(metrics)  # this worker's values are exact at scrape time
    publish_collected(metrics)
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(CollectedSnapshots())  # type: ignore[arg-type]
    registry.register(ServerProcessCollector())  # type: ignore[arg-type]
    return generate_latest(registry)


__all__ = [
    "MULTIPROC_ENV",
    "CollectedSnapshots",
    "Metrics",
    "ServerProcessCollector",
    "publish_collected",
    "publish_gauges",
    "render_all_workers",
]

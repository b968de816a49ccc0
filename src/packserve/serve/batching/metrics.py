"""Prometheus metrics of the batchers, exported by a custom collector.

The hot path only bumps Python ints and floats (a bisect per histogram observation, no lock,
no ``prometheus_client`` call); :meth:`BatchMetrics.collect` turns them into metric families
when ``/metrics`` is scraped. That keeps the per-request cost of the metrics well under a
microsecond, where a ``prometheus_client`` observe costs a few (measurable next to a
10 µs model call). Queue depth is read from the batcher at scrape time.

Under ``serve --workers N`` the workers publish snapshots of collector-based families like
these and the scrape sums them (``serve/workers/metrics.py``), so the hot path stays the same.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

__all__ = ["BatchMetrics", "ModelBatchObserver"]

ROWS_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0)
# Fine below 10 ms: the batcher's latency bound (max_wait_ms + 2 batch computes) is a few ms.
WAIT_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.0025, 0.003, 0.004,
    0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)
_LABELS = ["model", "version"]


class _Hist:
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        acc = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            acc += n
            out.append((repr(float(bound)), float(acc)))
        out.append(("+Inf", float(acc + self.counts[-1])))
        return out


class ModelBatchObserver:
    """The :class:`~packserve.serve.batching.observe.BatchObserver` of one model version."""

    def __init__(self, model: str, version: str) -> None:
        self.labels = [model, version]
        self.rows = _Hist(ROWS_BUCKETS)
        self.requests = _Hist(ROWS_BUCKETS)
        self.wait = _Hist(WAIT_BUCKETS)
        self.latency = _Hist(WAIT_BUCKETS)
        self.rejected_by: dict[str, int] = {}
        self.n_expired = 0
        self.n_cancelled = 0
        self.n_failed = 0
        self.depth: Callable[[], int] = lambda: 0

    def batch(self, rows: int, requests: int, compute_s: float) -> None:
        self.rows.observe(rows)
        self.requests.observe(requests)

    def immediate(self, rows: int, compute_s: float) -> None:
        # the hottest path of all (every idle request): no helper calls beyond one bisect
        r = self.rows
        r.counts[0 if rows == 1 else bisect_left(ROWS_BUCKETS, rows)] += 1
        r.total += rows
        self.requests.counts[0] += 1
        self.requests.total += 1
        self.wait.counts[0] += 1
        self.latency.counts[bisect_left(WAIT_BUCKETS, compute_s)] += 1
        self.latency.total += compute_s

    def queue_wait(self, seconds: float) -> None:
        self.wait.observe(seconds)

    def done(self, seconds: float) -> None:
        self.latency.observe(seconds)

    def rejected(self, reason: str) -> None:
        self.rejected_by[reason] = self.rejected_by.get(reason, 0) + 1

    def expired(self) -> None:
        self.n_expired += 1

    def cancelled(self) -> None:
        self.n_cancelled += 1

    def failed(self, requests: int) -> None:
        self.n_failed += requests


class BatchMetrics:
    """Registered once per app on its metrics registry; one observer per model version."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.observers: dict[tuple[str, str], ModelBatchObserver] = {}
        registry.register(self)  # type: ignore[arg-type]

    def observer(self, model: str, version: str) -> ModelBatchObserver:
        key = (model, version)
        if key not in self.observers:  # a reloaded version keeps counting where it left off
            self.observers[key] = ModelBatchObserver(model, version)
        return self.observers[key]

    def describe(self) -> list[Metric]:
        return []  # families are created per scrape; nothing to check for name clashes

    def collect(self) -> Iterator[Metric]:
        obs = list(self.observers.values())
        hists = (
            ("packserve_batch_size_rows", "rows per batch the batcher ran", "rows"),
            ("packserve_batch_size_requests", "requests merged into one batch", "requests"),
            ("packserve_batch_queue_wait_seconds", "time queued before the request's batch",
             "wait"),
            ("packserve_batch_request_seconds",
             "time a request spent in the batcher: submit -> its rows' result (wait + compute)",
             "latency"),
        )
        for name, doc, attr in hists:
            fam = HistogramMetricFamily(name, doc, labels=_LABELS)
            for o in obs:
                h: _Hist = getattr(o, attr)
                fam.add_metric(o.labels, h.buckets(), h.total)
            yield fam
        depth = GaugeMetricFamily("packserve_batch_queue_depth", "requests queued for a batch",
                                  labels=_LABELS)
        for o in obs:
            depth.add_metric(o.labels, float(o.depth()))
        yield depth
        rejected = CounterMetricFamily(
            "packserve_batch_rejected", "requests refused with 503 (queue full or draining)",
            labels=[*_LABELS, "reason"],
        )
        for o in obs:
            for reason in sorted(set(o.rejected_by) | {"queue_full", "draining"}):
                rejected.add_metric([*o.labels, reason], float(o.rejected_by.get(reason, 0)))
        yield rejected
        for name, doc, attr in (
            ("packserve_batch_expired", "requests whose deadline passed while queued (not run)",
             "n_expired"),
            ("packserve_batch_cancelled", "requests dropped because the client went away",
             "n_cancelled"),
            ("packserve_batch_failed", "requests failed because their batch's model call failed",
             "n_failed"),
        ):
            fam_c = CounterMetricFamily(name, doc, labels=_LABELS)
            for o in obs:
                fam_c.add_metric(o.labels, float(getattr(o, attr)))
            yield fam_c

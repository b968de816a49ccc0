"""Prometheus metrics of the batchers, registered on the app's metrics registry.

One :class:`BatchMetrics` per app holds the metric families; :meth:`BatchMetrics.observer`
gives each model version a :class:`~packserve.serve.batch_observe.BatchObserver` whose label
children are resolved once, so the hot path pays no ``.labels()`` lookup.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["BatchMetrics", "ModelBatchObserver"]

ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
WAIT_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
)


class BatchMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["model", "version"]
        self.batch_rows = Histogram(
            "packserve_batch_size_rows", "rows per batch the batcher ran", labels,
            buckets=ROWS_BUCKETS, registry=registry,
        )
        self.batch_requests = Histogram(
            "packserve_batch_size_requests", "requests merged into one batch", labels,
            buckets=ROWS_BUCKETS, registry=registry,
        )
        self.queue_wait = Histogram(
            "packserve_batch_queue_wait_seconds", "time a request spent queued before its batch",
            labels, buckets=WAIT_BUCKETS, registry=registry,
        )
        self.queue_depth = Gauge(
            "packserve_batch_queue_depth", "requests queued for a batch", labels,
            registry=registry,
        )
        self.rejected = Counter(
            "packserve_batch_rejected", "requests refused with 503 (queue full or draining)",
            [*labels, "reason"], registry=registry,
        )
        self.expired = Counter(
            "packserve_batch_expired", "requests whose deadline passed while queued (not run)",
            labels, registry=registry,
        )
        self.cancelled = Counter(
            "packserve_batch_cancelled", "requests dropped because the client went away",
            labels, registry=registry,
        )
        self.failed = Counter(
            "packserve_batch_failed", "requests failed because their batch's model call failed",
            labels, registry=registry,
        )

    def observer(self, model: str, version: str) -> ModelBatchObserver:
        return ModelBatchObserver(self, model, version)


class ModelBatchObserver:
    """The :class:`BatchObserver` of one model version."""

    def __init__(self, m: BatchMetrics, model: str, version: str) -> None:
        self._m = m
        self._labels = (model, version)
        self._rows = m.batch_rows.labels(model, version).observe
        self._reqs = m.batch_requests.labels(model, version).observe
        self._wait = m.queue_wait.labels(model, version).observe
        self._depth = m.queue_depth.labels(model, version).set
        self._expired = m.expired.labels(model, version).inc
        self._cancelled = m.cancelled.labels(model, version).inc
        self._failed = m.failed.labels(model, version).inc

    def batch(self, rows: int, requests: int, compute_s: float) -> None:
        self._rows(rows)
        self._reqs(requests)

    def queue_wait(self, seconds: float) -> None:
        self._wait(seconds)

    def queue_depth(self, requests: int) -> None:
        self._depth(requests)

    def rejected(self, reason: str) -> None:
        self._m.rejected.labels(*self._labels, reason).inc()

    def expired(self) -> None:
        self._expired()

    def cancelled(self) -> None:
        self._cancelled()

    def failed(self, requests: int) -> None:
        self._failed(requests)

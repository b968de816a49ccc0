"""Prometheus metrics, one registry per app.

A per-app :class:`CollectorRegistry` (not the global one) lets tests build several apps in
one process and lets other layers register their own metrics on ``app.state.metrics.registry``.
The process collector exports resident memory and CPU seconds (what ``bench`` reads).

The per-request series (requests, latency, inference time, rows) are plain Python numbers in
a custom collector that builds its families per scrape: an update costs a dict lookup and a
bisect (~0.3 µs) instead of prometheus_client's locked value objects (~3 µs for the four
updates of a request, a tenth of a tiny model's whole request). With ``--workers N`` they are
file-backed prometheus_client objects instead (:class:`FileBackedMetrics`: exact across
workers, see ``workers/metrics.py``); names and labels are the same either way.
"""

from __future__ import annotations

import os
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from packserve.errors import SignatureError
from packserve.serve.registry import ModelHandle, ModelState

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
INFERENCE_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)
ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


class _Hist:
    """Non-cumulative bucket counts + sum; cumulated at scrape time."""

    __slots__ = ("counts", "total")

    def __init__(self, n_bounds: int) -> None:
        self.counts = [0] * (n_bounds + 1)
        self.total = 0.0


class HotPathMetrics(Collector):
    """Requests by route/method/status, latency, inference time and rows, cheap to update."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], list[int]] = {}
        self.latency: dict[str, _Hist] = {}
        self.inference: dict[tuple[str, str, str], _Hist] = {}
        self.rows: dict[tuple[str, str], _Hist] = {}
        self._lock = threading.Lock()  # inference is observed from executor threads too

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, str(status))
        counter = self.requests.get(key)
        if counter is None:
            counter = self.requests[key] = [0]
        counter[0] += 1
        hist = self.latency.get(route)
        if hist is None:
            hist = self.latency[route] = _Hist(len(LATENCY_BUCKETS))
        hist.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        hist.total += seconds

    def observe_inference(self, model: str, version: str, rows: int, seconds: float, inline: bool) -> None:
        key = (model, version, "inline" if inline else "thread")
        with self._lock:
            hist = self.inference.get(key)
            if hist is None:
                hist = self.inference[key] = _Hist(len(INFERENCE_BUCKETS))
            hist.counts[bisect_left(INFERENCE_BUCKETS, seconds)] += 1
            hist.total += seconds
            rhist = self.rows.get(key[:2])
            if rhist is None:
                rhist = self.rows[key[:2]] = _Hist(len(ROWS_BUCKETS))
            rhist.counts[bisect_left(ROWS_BUCKETS, rows)] += 1
            rhist.total += rows

    @staticmethod
    def _histogram(
        name: str, doc: str, labels: list[str], bounds: tuple[float, ...],
        series: Sequence[tuple[tuple[str, ...], _Hist]],
    ) -> HistogramMetricFamily:
        fam = HistogramMetricFamily(name, doc, labels=labels)
        les = [floatToGoString(b) for b in bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        for key, hist in series:
            acc, buckets = 0, []
            for le, count in zip(les, list(hist.counts), strict=True):
                acc += count
                buckets.append((le, float(acc)))
            fam.add_metric(list(key), buckets, hist.total)
        return fam

    def collect(self) -> Iterator[Metric]:
        req = CounterMetricFamily(
            "packserve_requests", "HTTP requests by route template, method and status",
            labels=["route", "method", "status"],
        )
        for key, counter in list(self.requests.items()):
            req.add_metric(list(key), counter[0])
        yield req
        yield self._histogram(
            "packserve_request_duration_seconds", "HTTP request latency (first byte in, last out)",
            ["route"], LATENCY_BUCKETS, [((k,), v) for k, v in list(self.latency.items())],
        )
        yield self._histogram(
            "packserve_inference_duration_seconds", "time in predictor.run per computed batch",
            ["model", "version", "mode"], INFERENCE_BUCKETS, list(self.inference.items()),
        )
        yield self._histogram(
            "packserve_inference_rows", "rows per computed batch",
            ["model", "version"], ROWS_BUCKETS, list(self.rows.items()),
        )


class FileBackedMetrics:
    """The same series as prometheus_client objects, for ``--workers N``.

    In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``) every update goes to the worker's
    memory-mapped file, so counts are exact across workers — even for a killed one — at
    prometheus_client's price per update.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.requests = Counter(
            "packserve_requests", "HTTP requests by route template, method and status",
            ["route", "method", "status"], registry=r,
        )
        self.latency = Histogram(
            "packserve_request_duration_seconds", "HTTP request latency (first byte in, last out)",
            ["route"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.inference = Histogram(
            "packserve_inference_duration_seconds", "time in predictor.run per computed batch",
            ["model", "version", "mode"], buckets=INFERENCE_BUCKETS, registry=r,
        )
        self.rows = Histogram(
            "packserve_inference_rows", "rows per computed batch",
            ["model", "version"], buckets=ROWS_BUCKETS, registry=r,
        )
        self._req: dict[tuple[str, str, int], tuple[Callable[[], None], Callable[[float], None]]] = {}
        self._inf: dict[tuple[str, str, bool], tuple[Callable[[float], None], Callable[[float], None]]] = {}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        pair = self._req.get(key)
        if pair is None:
            pair = self._req[key] = (
                self.requests.labels(route, method, str(status)).inc,
                self.latency.labels(route).observe,
            )
        pair[0]()
        pair[1](seconds)

    def observe_inference(self, model: str, version: str, rows: int, seconds: float, inline: bool) -> None:
        key = (model, version, inline)
        pair = self._inf.get(key)
        if pair is None:
            pair = self._inf[key] = (
                self.inference.labels(model, version, "inline" if inline else "thread").observe,
                self.rows.labels(model, version).observe,
            )
        pair[0](seconds)
        pair[1](rows)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        #: the per-request series: plain numbers in one process, file-backed with --workers N
        self.hot: HotPathMetrics | FileBackedMetrics
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            self.hot = FileBackedMetrics(r)
        else:
            self.hot = HotPathMetrics()
            r.register(self.hot)
        self.model_state = Gauge(
            "packserve_model_state", "1 for the model version's current state",
            ["model", "version", "state"], registry=r, multiprocess_mode="liveall",
        )
        # multiprocess_mode: how ``--workers N`` merges the workers' values (workers/metrics.py)
        self.in_flight = Gauge("packserve_requests_in_flight", "requests being handled", registry=r,
                               multiprocess_mode="livesum")
        self.draining = Gauge("packserve_draining", "1 after SIGTERM", registry=r,
                              multiprocess_mode="livemax")
        self.signatures_enforced = Gauge(
            "packserve_signatures_enforced",
            "1: only bundles signed by a trusted key are loaded (--trusted-key); 0: signatures not checked",
            registry=r, multiprocess_mode="livemax",
        )
        self.trusted_keys = Gauge("packserve_trusted_keys", "trusted public keys / CA certificates",
                                  registry=r, multiprocess_mode="livemax")
        self.signature_refusals = Counter(
            "packserve_signature_refusals", "model versions refused for their signature, by reason",
            ["model", "version", "reason"], registry=r,
        )
        self.observe_request = self.hot.observe_request

    def set_signature_policy(self, trusted: int) -> None:
        self.signatures_enforced.set(1.0 if trusted else 0.0)
        self.trusted_keys.set(float(trusted))

    def observe_refusal(self, handle: ModelHandle, exc: SignatureError) -> None:
        self.signature_refusals.labels(handle.name, handle.version, exc.reason).inc()

    def observe_inference(self, handle: ModelHandle, rows: int, seconds: float, inline: bool) -> None:
        self.hot.observe_inference(handle.name, handle.version, rows, seconds, inline)

    def set_model_state(self, handle: ModelHandle) -> None:
        for state in ModelState:
            self.model_state.labels(handle.name, handle.version, state.value).set(
                1.0 if handle.state is state else 0.0
            )

    def render(self) -> bytes:
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:  # --workers N: the whole server's numbers
            from packserve.serve.workers.metrics import render_all_workers

            return render_all_workers(self)
        return generate_latest(self.registry)


__all__ = ["FileBackedMetrics", "HotPathMetrics", "Metrics"]

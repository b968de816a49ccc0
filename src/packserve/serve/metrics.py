"""Prometheus metrics, one registry per app.

A per-app :class:`CollectorRegistry` (not the global one) lets tests build several apps in
one process and lets other layers register their own metrics on ``app.state.metrics.registry``.
The process collector exports resident memory and CPU seconds (what ``bench`` reads);
label children are cached so the hot path pays one dict lookup, not ``.labels()``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from packserve.serve.registry import ModelHandle, ModelState

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
INFERENCE_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)
ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
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
        self.model_state = Gauge(
            "packserve_model_state", "1 for the model version's current state",
            ["model", "version", "state"], registry=r, multiprocess_mode="liveall",
        )
        # multiprocess_mode: how ``--workers N`` merges the workers' values (worker_metrics.py)
        self.in_flight = Gauge("packserve_requests_in_flight", "requests being handled", registry=r,
                               multiprocess_mode="livesum")
        self.draining = Gauge("packserve_draining", "1 after SIGTERM", registry=r,
                              multiprocess_mode="livemax")
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

    def observe_inference(self, handle: ModelHandle, rows: int, seconds: float, inline: bool) -> None:
        key = (handle.name, handle.version, inline)
        pair = self._inf.get(key)
        if pair is None:
            pair = self._inf[key] = (
                self.inference.labels(handle.name, handle.version, "inline" if inline else "thread").observe,
                self.rows.labels(handle.name, handle.version).observe,
            )
        pair[0](seconds)
        pair[1](rows)

    def set_model_state(self, handle: ModelHandle) -> None:
        for state in ModelState:
            self.model_state.labels(handle.name, handle.version, state.value).set(
                1.0 if handle.state is state else 0.0
            )

    def render(self) -> bytes:
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:  # --workers N: the whole server's numbers
            from packserve.serve.worker_metrics import render_all_workers

            return render_all_workers(self)
        return generate_latest(self.registry)


__all__ = ["Metrics"]

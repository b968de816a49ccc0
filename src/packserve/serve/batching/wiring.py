"""Plugging per-model :class:`~packserve.serve.batching.Batcher` objects into the server.

* :func:`install_batching` (called by ``create_app``) watches the registry: when a model
  version becomes ready and batching is on for it (``batching`` / ``model_batching``), it
  gets a batcher as ``handle.batcher``, so ``ModelHandle.infer`` — used by ``/predict``,
  ``/predict/batch`` and V2 — submits to it. The batcher computes through the handle's own
  ``_run`` (inference metrics, cost tracking) and follows the handle's calibrated inline
  rule, so batched and unbatched calls obey the same "never stall the loop" bound.
* On SIGTERM (``ServerState.on_drain``) every batcher drains: no more waiting for company,
  queued work completes, and whatever cannot finish within ``drain_timeout_s`` gets an
  explicit 503 instead of a dropped connection.
* The raw ``/predict`` and V2 ``infer`` endpoints hand the batcher a disconnect probe
  (:class:`packserve.serve.endpoint.DisconnectProbe`): if the client goes away while its
  request is queued, the request is dropped from its batch.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from packserve.runtime import Feeds, Prediction, feeds_rows
from packserve.serve.batching.batcher import Batcher
from packserve.serve.batching.metrics import BatchMetrics
from packserve.serve.registry import ModelHandle, ModelRegistry, ModelState
from packserve.serve.settings import ServeSettings

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("packserve.serve")

__all__ = ["BatchConfig", "Batchers", "install_batching", "resolve_config"]


@dataclass(frozen=True)
class BatchConfig:
    enabled: bool
    max_batch_size: int
    max_wait_ms: float
    max_queue: int
    timeout_ms: float


def resolve_config(settings: ServeSettings, model: str) -> BatchConfig:
    """Global batching settings with ``model_batching[model]`` applied on top."""
    o = settings.model_batching.get(model)

    def pick(name: str) -> Any:
        v = getattr(o, name) if o is not None else None
        return getattr(settings, name) if v is None else v

    return BatchConfig(
        pick("batching"), pick("max_batch_size"), pick("max_wait_ms"), pick("max_queue"),
        pick("timeout_ms"),
    )


class Batchers:
    """The batchers of one app, keyed by handle; follows model state changes."""

    def __init__(self, settings: ServeSettings, metrics_registry: CollectorRegistry) -> None:
        self.settings = settings
        self.metrics = BatchMetrics(metrics_registry)
        self.by_handle: dict[ModelHandle, Batcher] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def on_state(self, handle: ModelHandle) -> None:
        if handle.state is ModelState.READY:
            if handle not in self.by_handle:
                self._attach(handle)
        elif handle in self.by_handle:
            self._detach(handle)

    def _attach(self, handle: ModelHandle) -> None:
        cfg = resolve_config(self.settings, handle.name)
        if not cfg.enabled:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # a handle made ready outside the server (tests, tools)
            return
        loop_thread = threading.get_ident()

        def run(feeds: Feeds) -> Prediction:
            # the handle's own runner: inference metrics and its cost model stay exact
            return handle._run(feeds, feeds_rows(feeds), threading.get_ident() == loop_thread)

        observer = self.metrics.observer(handle.name, handle.version)
        batcher = Batcher(
            run,
            max_batch_size=cfg.max_batch_size,
            max_wait_ms=cfg.max_wait_ms,
            max_queue=cfg.max_queue,
            timeout_ms=cfg.timeout_ms,
            inline=handle.cost.inline,
            run_inline=lambda feeds, rows: handle._run(feeds, rows, True),
            observer=observer,
            name=f"{handle.name}-{handle.version}",
        )
        batcher.start()
        observer.depth = lambda: batcher.queue_depth
        self.by_handle[handle] = batcher
        handle.batcher = batcher
        log.info(
            "model %s/%s: batching on (max_batch_size=%d, max_wait_ms=%g, max_queue=%d, "
            "timeout_ms=%g)", handle.name, handle.version, cfg.max_batch_size, cfg.max_wait_ms,
            cfg.max_queue, cfg.timeout_ms,
        )

    def _detach(self, handle: ModelHandle) -> None:
        batcher = self.by_handle.pop(handle)
        handle.batcher = None
        self._spawn(self._retire(batcher, self.settings.drain_timeout_s))

    @staticmethod
    async def _retire(batcher: Batcher, timeout: float) -> None:
        report = await batcher.drain(timeout)
        if report.abandoned:
            log.warning("batcher %s: %d queued request(s) answered 503 at the drain timeout",
                        batcher.name, report.abandoned)
        batcher.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def drain_all(self, timeout: float) -> None:
        """SIGTERM: drain every batcher in the background (the server awaits in-flight work)."""
        # finish a little before the server's own deadline (grace + drain timeout), so that
        # leftovers get their 503 while the connections are still open
        budget = self.settings.shutdown_grace_s + 0.9 * timeout
        for batcher in list(self.by_handle.values()):
            self._spawn(self._retire(batcher, budget))


def install_batching(
    registry: ModelRegistry, settings: ServeSettings, metrics_registry: CollectorRegistry
) -> Batchers:
    batchers = Batchers(settings, metrics_registry)
    registry.on_state.append(batchers.on_state)
    return batchers


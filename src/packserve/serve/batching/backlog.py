"""The queue side of a :class:`~packserve.serve.batching.Batcher`: what it holds and how it ends.

:class:`Backlog` owns the batcher's state (queue, live counts, timers) and everything that
takes requests *out* of the queue without running them: a passed deadline, a client that
disconnected (the one sweep timer that starts probes after ``WATCH_AFTER_S``), ``drain`` and
``close``. :class:`~packserve.serve.batching.batcher.Batcher` subclasses it and adds the hot
path (submission and dispatch); being one object, the split costs no call per request.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor

from packserve.errors import DeadlineExceededError, OverloadedError
from packserve.runtime.inputs import Feeds
from packserve.runtime.prediction import Prediction
from packserve.serve.batching.observe import BatcherStats, BatchObserver, NullObserver
from packserve.serve.batching.policy import BatchCostFit, WaitPolicy
from packserve.serve.batching.types import (
    _DONE,
    _QUEUED,
    WATCH_AFTER_S,
    ClientGone,
    DrainReport,
    _Item,
)

__all__ = ["Backlog"]


def _never(rows: int) -> bool:
    return False


class Backlog:
    """A batcher's queue and counts, expiry, disconnect sweep, drain and close.

    Constructed through :class:`~packserve.serve.batching.Batcher` (its docstring says what
    the arguments mean); ``_kick`` (start batches) is the subclass's.
    """

    def __init__(
        self,
        run: Callable[[Feeds], Prediction],
        *,
        max_batch_size: int = 64,
        max_wait_ms: float = 2.0,
        max_queue: int = 256,
        timeout_ms: float = 0.0,
        concurrency: int = 1,
        inline: Callable[[int], bool] | None = None,
        run_inline: Callable[[Feeds, int], Prediction] | None = None,
        executor: Executor | None = None,
        observer: BatchObserver | None = None,
        name: str = "model",
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or concurrency < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_size, max_queue, concurrency >= 1; max_wait_ms >= 0")
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.timeout_s = max(timeout_ms, 0.0) / 1000.0
        self.concurrency = concurrency
        self.name = name
        self._inline = inline or _never
        self._run_inline = run_inline
        self._fast = 0
        self._own_executor = executor is None
        self._executor: Executor = executor or ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix=f"packserve-batch-{name}"
        )
        self.observer: BatchObserver = observer or NullObserver()
        self.cost = BatchCostFit()
        self.policy = WaitPolicy(max_batch_size, max_wait_ms / 1000.0, self.cost)
        self.stats = BatcherStats()
        self._queue: deque[_Item] = deque()
        self._live = 0  # queued, not expired/cancelled
        self._live_rows = 0
        self._in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.TimerHandle | None = None
        self._wake_at = math.inf
        self._sweep: asyncio.TimerHandle | None = None
        self._draining = False
        self._closed = False
        self._idle: asyncio.Event | None = None
        self._turn_mark = False  # a submission already happened in this loop turn

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Bind to the running event loop (call from the server's startup)."""
        self._loop = asyncio.get_running_loop()

    @property
    def queue_depth(self) -> int:
        return self._live

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def draining(self) -> bool:
        return self._draining

    async def drain(self, timeout: float) -> DrainReport:
        """Refuse new work; wait up to ``timeout`` s for queued and running work to finish.

        Requests still queued at the timeout get :class:`OverloadedError` (the server is
        going away); none is left without an answer.
        """
        self._draining = True
        if self._loop is None:
            return DrainReport(completed=True, abandoned=0)
        self._kick()  # a pending wait would only delay the drain
        if self._idle is None:
            self._idle = asyncio.Event()  # only a drain pays for idle tracking
        self._check_idle()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=max(timeout, 0.0))
            return DrainReport(completed=True, abandoned=0)
        except TimeoutError:
            return DrainReport(completed=False, abandoned=self._abandon_queued())

    def _abandon_queued(self) -> int:
        abandoned = 0
        while self._queue:
            item = self._queue.popleft()
            if item.state == _QUEUED and not item.future.done():
                self._forget(item)
                item.future.set_exception(
                    OverloadedError("the server shut down before this request could run")
                )
                abandoned += 1
        return abandoned

    def close(self) -> None:
        """Fail whatever is still queued (explicitly), release the private executor."""
        self._closed = True
        self._draining = True
        for handle in (self._wake, self._sweep):
            if handle is not None:
                handle.cancel()
        if self._loop is not None:
            self._abandon_queued()
        if self._own_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)

    # --- bookkeeping ------------------------------------------------------------------------

    def _retry_after(self) -> float:
        """Seconds until the queue has likely drained: queued batches plus the running one."""
        running = self.cost.estimate(self.max_batch_size) if self._in_flight else 0.0
        est = (self.policy.retry_after(self._live_rows) + running) / self.concurrency
        return min(max(est, 0.001), 60.0)

    def _reject(self, reason: str) -> None:
        self.stats.rejected += 1
        self.observer.rejected(reason)

    def _forget(self, item: _Item) -> None:
        """Take a queued item out of the live counts (it stays in the deque, skipped)."""
        item.state = _DONE
        item.settle()
        self._live -= 1
        self._live_rows -= item.rows
        self._check_idle()

    def _expire(self, item: _Item) -> None:
        item.timer = None
        if item.state != _QUEUED or item.future.done():
            return
        self._forget(item)
        self.stats.expired += 1
        self.observer.expired()
        item.future.set_exception(
            DeadlineExceededError("the request's deadline passed while it was queued; not run")
        )

    def _check_idle(self) -> None:
        if self._live == 0 and self._in_flight == 0 and self._idle is not None:
            self._idle.set()

    # --- disconnect watching ----------------------------------------------------------------

    def _on_sweep(self) -> None:
        """Start the probes of requests queued for WATCH_AFTER_S; re-arm while any wait."""
        self._sweep = None
        assert self._loop is not None
        now = time.monotonic()
        pending = False
        for item in self._queue:
            if item.state != _QUEUED or item.probe is None or item.watcher is not None:
                continue
            if now - item.enqueued >= WATCH_AFTER_S * 0.9:
                task = self._loop.create_task(item.probe())
                task.add_done_callback(functools.partial(self._on_probe, item))
                item.watcher = task
            else:
                pending = True
        if pending and not self._closed:
            self._sweep = self._loop.call_later(WATCH_AFTER_S, self._on_sweep)

    def _on_probe(self, item: _Item, task: asyncio.Task[bool]) -> None:
        if task.cancelled() or task.exception() is not None or not task.result():
            return
        item.watcher = None
        if item.state == _QUEUED and not item.future.done():
            self._forget(item)
            self.stats.cancelled += 1
            self.observer.cancelled()
            item.future.set_exception(ClientGone("the client disconnected while queued"))

    def _kick(self) -> None:
        """Start batches while the model has capacity and work is queued (the subclass's)."""
        raise NotImplementedError

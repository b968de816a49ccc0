"""Dynamic request batching for one model: merge concurrent requests into one model call.

Algorithm (all bookkeeping runs on the event loop in plain callbacks; there is no batcher
task to wake up, so an idle request pays no scheduling hop):

1. ``submit`` puts the request (already validated feeds) on a bounded FIFO queue. A full
   queue, or a draining batcher, raises :class:`OverloadedError` at once with a
   ``retry_after_s`` estimated from the measured batch cost.
2. Whenever something changes (a submission, a finished batch, a wait timer), ``_kick``
   runs. If fewer than ``concurrency`` batches are in flight and requests are queued, it
   asks :class:`~packserve.serve.batching.policy.WaitPolicy` whether to wait. Without a
   measured reason to wait it dispatches **now**: a request that finds the model idle and
   the queue empty runs immediately, whatever ``max_wait_ms`` says (no idle penalty).
3. A batch takes queued requests in arrival order while their rows fit ``max_batch_size``.
   Batches therefore form from the requests that arrived while the model was busy, and the
   next batch starts the moment the previous one finishes. A request with more rows than
   ``max_batch_size`` (``/predict/batch``) runs alone and **unsplit**: one call, no
   reassembly, and nothing else's latency depends on it beyond that one call.
4. Optional waiting (``max_wait_ms`` > 0) happens only when the batch cost fit says a merge
   saves more model time than the waiting costs, and never beyond ``max_wait_ms`` from the
   oldest queued request (see ``policy`` for the rule and its bound).
5. The batch runs in an executor thread: concatenate feeds, call ``run``, slice the
   :class:`Prediction` back per request, all off the loop. Each caller's future gets exactly
   its own rows, in order. One exception, off by default: a request that finds the model
   idle, the queue empty and *no other request submitted in the same loop turn* runs
   synchronously inside ``submit``, on the loop, when the ``inline(rows)`` rule passed in
   allows it (the server passes the model's :class:`~packserve.serve.offload.CostModel`, the
   same rule it applies to unbatched calls; without one, every call runs in a thread). For
   a model that costs ~10 µs a call, the thread hop (~100 µs on a busy 2-core host) would
   *be* the idle penalty. A second submission in the
   same loop turn is the evidence of concurrency: it, and everything that arrives while the
   model is busy, goes through the queue and the thread, where batches form and the loop
   stays free for HTTP. That fast path needs no queue entry, future or timer at all.

Failure semantics: a request whose ``deadline`` passes while queued is removed by a timer
and gets :class:`DeadlineExceededError` (never computed; once its batch has started it is
allowed to finish). A caller that is cancelled before its batch starts is dropped from the
queue. A submission may carry a disconnect *probe* (``probe=`` or the :data:`client_probe`
context variable): once the request has been queued for ``WATCH_AFTER_S`` a single sweep
timer starts the probe, and if the client has gone the request leaves the queue with
:class:`ClientGone`. Requests that get their turn sooner never pay for a watcher task.
A failing model call fails only its own batch; every caller in it gets its own
:class:`InferenceError` without internals. ``drain`` refuses new work and
completes queued work within a timeout; what cannot finish is failed explicitly with
:class:`OverloadedError`, never dropped silently.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
import time
from collections.abc import Callable

from packserve.errors import (
    DeadlineExceededError,
    InferenceError,
    OverloadedError,
    PackserveError,
)
from packserve.runtime.inputs import Feeds, feeds_rows
from packserve.runtime.prediction import Prediction
from packserve.serve.batching.backlog import Backlog
from packserve.serve.batching.execute import Outcome, compute, fresh_error
from packserve.serve.batching.observe import BatcherStats, BatchObserver, NullObserver
from packserve.serve.batching.types import (
    _DONE,
    _QUEUED,
    _RUNNING,
    WATCH_AFTER_S,
    ClientGone,
    DrainReport,
    Probe,
    _Item,
    client_probe,
)

__all__ = [
    "WATCH_AFTER_S",
    "BatchObserver",
    "Batcher",
    "BatcherStats",
    "ClientGone",
    "DrainReport",
    "NullObserver",
    "Probe",
    "client_probe",
]


class Batcher(Backlog):
    """Merge concurrent ``submit`` calls for one model into few ``run`` calls.

    ``run`` is called in ``executor`` (default: a private pool of ``concurrency`` threads)
    with the concatenated feeds; at most ``concurrency`` batches are in flight at once.
    ``inline(rows)`` is the one inline-or-thread rule (the server passes the handle's
    calibrated :class:`~packserve.serve.offload.CostModel`, so batched and unbatched calls
    follow one rule; ``None``: never on the loop);
    ``run_inline(feeds, rows)``, when given, is what the idle fast path calls instead of
    ``run`` (the caller knows it runs on the loop and how many rows there are).
    ``deadline`` values are absolute :func:`time.monotonic` timestamps; ``timeout_ms`` > 0
    gives every submission without one a deadline that far from its submission.

    State, expiry, the disconnect sweep, ``drain`` and ``close`` are :class:`Backlog`'s
    (``backlog.py``); this class is the per-request path: submission and dispatch.
    """

    # --- submission -------------------------------------------------------------------------

    async def submit(
        self, feeds: Feeds, *, deadline: float | None = None, probe: Probe | None = None
    ) -> Prediction:
        """Compute ``feeds`` (validated) in some batch; return exactly its own rows."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("Batcher.start() was not called")
        now = time.monotonic()
        if deadline is None and self.timeout_s > 0:
            deadline = now + self.timeout_s
        if self._draining:
            self._reject("draining")
            raise OverloadedError("the server is shutting down", retry_after_s=1.0)
        if self._live >= self.max_queue:
            self._reject("queue_full")
            raise OverloadedError(
                f"model {self.name!r} has {self._live} requests queued; retry later",
                retry_after_s=self._retry_after(),
            )
        if deadline is not None and deadline <= now:
            self.stats.expired += 1
            self.observer.expired()
            raise DeadlineExceededError("the request's deadline passed before it could run")
        rows = feeds_rows(feeds)
        self.policy.arrived(now)
        alone = not self._turn_mark
        if alone:
            self._turn_mark = True
            loop.call_soon(self._new_turn)
            if self._live == 0 and self._in_flight == 0 and self._inline(rows):
                return self._run_now(feeds, rows)  # idle, nobody else in sight: on the loop
        item = _Item(feeds, rows, loop.create_future(), now, deadline)
        if deadline is not None:
            item.timer = loop.call_later(deadline - now, self._expire, item)
        self._queue.append(item)
        self._live += 1
        self._live_rows += rows
        self._kick()
        if item.state == _QUEUED:
            item.probe = probe if probe is not None else client_probe.get()
            if item.probe is not None and self._sweep is None:
                self._sweep = loop.call_later(WATCH_AFTER_S, self._on_sweep)
        try:
            return await item.future
        except asyncio.CancelledError:
            if item.state == _QUEUED:  # the caller was cancelled before its turn
                self._forget(item)
                self.stats.cancelled += 1
                self.observer.cancelled()
            raise

    # --- dispatch ---------------------------------------------------------------------------

    def _kick(self) -> None:
        """Start batches while the model has capacity and work is queued."""
        while self._in_flight < self.concurrency and not self._closed:
            while self._queue and self._queue[0].state != _QUEUED:
                self._queue.popleft()
            if not self._queue:
                return
            now = time.monotonic()
            if not self._draining:
                until = self.policy.wait_until(
                    now, self._live, self._live_rows, self._queue[0].enqueued
                )
                if until is not None:
                    self._schedule_wake(until)
                    return
            batch = self._take(now)
            if batch:  # empty: everything at the head had expired or lost its client
                self._dispatch(batch)

    def _run_now(self, feeds: Feeds, rows: int) -> Prediction:
        """The idle fast path: one request, computed synchronously, no queue entry at all.

        Every idle request takes it, so it is kept to the bone: no helper layers, and the
        batch cost fit (which only needs the trend) is fed one fast-path call in eight.
        """
        self._in_flight += 1
        error: PackserveError | None = None
        t0 = time.perf_counter()
        try:
            pred = self._run_inline(feeds, rows) if self._run_inline else self._run(feeds)
        except PackserveError as exc:
            error = exc
        except Exception as exc:
            error = InferenceError("the model failed to compute this batch",
                                   detail_for_logs=repr(exc))
        finally:
            self._in_flight -= 1
        dt = time.perf_counter() - t0
        stats = self.stats
        stats.batches += 1
        stats.rows += rows
        if rows > stats.max_batch_rows:
            stats.max_batch_rows = rows
        if error is None and len(pred) != rows:
            error = InferenceError("the model returned a wrong number of rows")
        if error is not None:
            stats.failed += 1
            self.observer.queue_wait(0.0)
            self.observer.failed(1)
            raise error
        stats.completed += 1
        self.observer.immediate(rows, dt)
        self._fast += 1
        if self.cost.samples < 16 or not self._fast & 7:
            self.cost.observe(rows, dt)
        return pred

    def _new_turn(self) -> None:
        self._turn_mark = False

    def _schedule_wake(self, at: float) -> None:
        if self._wake is not None and self._wake_at <= at:
            return
        if self._wake is not None:
            self._wake.cancel()
        assert self._loop is not None
        self._wake_at = at
        self._wake = self._loop.call_later(max(at - time.monotonic(), 0.0), self._on_wake)

    def _on_wake(self) -> None:
        self._wake = None
        self._wake_at = math.inf
        self._kick()

    def _take(self, now: float) -> list[_Item]:
        batch: list[_Item] = []
        rows = 0
        queue = self._queue
        while queue:
            item = queue[0]
            if item.state != _QUEUED:
                queue.popleft()
                continue
            if item.deadline is not None and item.deadline <= now:
                # its timer is due but has not run yet (a busy loop): dropped here, not computed
                queue.popleft()
                item.settle()
                self._expire(item)
                continue
            if item.watcher is not None and item.watcher.done():
                # its probe has answered but the callback has not run yet: decide it here
                self._on_probe(item, item.watcher)
                if item.state != _QUEUED:  # the client left: dropped, not computed
                    queue.popleft()
                    continue
            if batch and rows + item.rows > self.max_batch_size:
                break
            queue.popleft()
            item.state = _RUNNING
            if item.timer is not None or item.watcher is not None:
                item.settle()
            rows += item.rows
            batch.append(item)
            self.observer.queue_wait(now - item.enqueued)
        self._live -= len(batch)
        self._live_rows -= rows
        return batch

    def _dispatch(self, batch: list[_Item]) -> None:
        assert self._loop is not None
        self._in_flight += 1
        parts = [it.feeds for it in batch]
        sizes = [it.rows for it in batch]
        loop = self._loop
        try:
            cf = self._executor.submit(compute, self._run, parts, sizes)
        except RuntimeError as exc:  # executor already shut down
            cf = concurrent.futures.Future()
            cf.set_exception(exc)
        # Straight back to the loop from the worker thread: one wake-up per batch, without
        # the extra hop of wrapping the concurrent future in an asyncio one.
        cf.add_done_callback(lambda f: _call_back(loop, self._finish, batch, f))

    def _finish(self, batch: list[_Item], fut: concurrent.futures.Future[Outcome]) -> None:
        try:
            outcome = fut.result()
        except BaseException as exc:  # executor shut down, or cancelled at close
            outcome = Outcome(
                error=InferenceError("the batch could not run", detail_for_logs=repr(exc))
            )
        self._complete(batch, outcome)

    def _complete(self, batch: list[_Item], outcome: Outcome) -> None:
        self._in_flight -= 1
        rows = 0
        for item in batch:
            rows += item.rows
        stats = self.stats
        stats.batches += 1
        stats.rows += rows
        if rows > stats.max_batch_rows:
            stats.max_batch_rows = rows
        error = outcome.error
        if error is None:
            self.cost.observe(rows, outcome.compute_s)
            observer = self.observer
            observer.batch(rows, len(batch), outcome.compute_s)
            now = time.monotonic()
            for item, result in zip(batch, outcome.results, strict=True):
                item.state = _DONE
                if not item.future.done():  # done: the caller left while its batch ran
                    stats.completed += 1
                    item.future.set_result(result)
                    observer.done(now - item.enqueued)
        else:
            stats.failed += len(batch)
            self.observer.failed(len(batch))
            for item in batch:
                item.state = _DONE
                if not item.future.done():
                    item.future.set_exception(fresh_error(error))
        if self._queue:
            self._kick()
        self._check_idle()


def _call_back(
    loop: asyncio.AbstractEventLoop,
    fn: Callable[[list[_Item], concurrent.futures.Future[Outcome]], None],
    batch: list[_Item],
    fut: concurrent.futures.Future[Outcome],
) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
        loop.call_soon_threadsafe(fn, batch, fut)

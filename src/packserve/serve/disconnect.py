"""A request whose client has gone is not computed: the disconnect probe and the watched thread call.

Under overload admitted work waits — for a batch (``serve/batching/``) or for a free
inference thread — and clients give up meanwhile. Computing their answers spends the
capacity the clients still waiting need. The HTTP layer puts a *probe* for the current
request in :data:`client_probe` (``await probe()`` returns True once the client has
disconnected, i.e. ASGI ``http.disconnect``); whatever queues the request starts the probe
only once the request has waited :data:`WATCH_AFTER_S`, so requests that get their turn at
once never pay for a watcher task.

:func:`run_watched` is that for the inference thread pool: the call is submitted as a
:class:`concurrent.futures.Future`; if the client leaves while it is still queued the future
is cancelled, and a cancelled future is never run (the pool checks at the moment the work
leaves its queue). Once the call has started it finishes (a model call cannot be
interrupted); its answer is then dropped. The caller gets :class:`ClientGone`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from contextvars import ContextVar
from typing import Any, TypeVar

__all__ = ["WATCH_AFTER_S", "ClientGone", "Probe", "client_probe", "run_watched"]

T = TypeVar("T")

Probe = Callable[[], Coroutine[Any, Any, bool]]
"""Returns True once the client has disconnected (False: it returned for another reason)."""

#: The disconnect probe of the request being handled in this task (set by the HTTP layer).
client_probe: ContextVar[Probe | None] = ContextVar("packserve_client_probe", default=None)

#: A queued request gets its disconnect watcher after waiting this long.
WATCH_AFTER_S = 0.005


class ClientGone(Exception):
    """The request left the queue because its client disconnected; nothing is sent back."""


class _Watched:
    """One submitted call: its concurrent future, the watch timer and the watcher task."""

    __slots__ = ("cf", "probe", "result", "timer", "watcher")

    def __init__(self, cf: concurrent.futures.Future[Any], probe: Probe,
                 result: asyncio.Future[Any]) -> None:
        self.cf = cf
        self.probe = probe
        self.result = result
        self.timer: asyncio.TimerHandle | None = None
        self.watcher: asyncio.Task[bool] | None = None

    def watch(self) -> None:
        """The call waited WATCH_AFTER_S: if it is still queued, start the probe."""
        self.timer = None
        if self.cf.running() or self.cf.done():
            return  # computing or computed: nothing left to save
        self.watcher = asyncio.get_running_loop().create_task(self.probe())
        self.watcher.add_done_callback(self._probed)

    def _probed(self, task: asyncio.Task[bool]) -> None:
        self.watcher = None
        if task.cancelled() or task.exception() is not None or not task.result():
            return
        # cancel() succeeds only while the call is still queued: the pool never runs it
        if self.cf.cancel() and not self.result.done():
            self.result.set_exception(ClientGone("the client disconnected while queued"))

    def settle(self, cf: concurrent.futures.Future[Any]) -> None:
        """On the loop, once the call finished (or was cancelled): hand over, stop watching."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.watcher is not None:
            self.watcher.cancel()
            self.watcher = None
        if self.result.done() or cf.cancelled():
            return
        exc = cf.exception()
        if exc is not None:
            self.result.set_exception(exc)
        else:
            self.result.set_result(cf.result())


async def run_watched(
    executor: Executor | None, fn: Callable[..., T], *args: Any, probe: Probe | None = None
) -> T:
    """``fn(*args)`` in ``executor``; not run at all if the client (``probe``, default:
    :data:`client_probe`) leaves while it waits for a thread. Without a probe, or with
    ``executor=None`` (the loop's default pool, which the server never uses), unwatched."""
    loop = asyncio.get_running_loop()
    probe = probe if probe is not None else client_probe.get()
    if probe is None or executor is None:
        return await loop.run_in_executor(executor, fn, *args)
    result: asyncio.Future[T] = loop.create_future()
    cf = executor.submit(fn, *args)
    watched = _Watched(cf, probe, result)
    watched.timer = loop.call_later(WATCH_AFTER_S, watched.watch)
    cf.add_done_callback(lambda f: _call_back(loop, watched.settle, f))
    try:
        return await result
    except asyncio.CancelledError:  # the caller was cancelled: drop the call if still queued
        cf.cancel()
        watched.settle(cf)
        raise


def _call_back(loop: asyncio.AbstractEventLoop, fn: Callable[[Any], None],
               cf: concurrent.futures.Future[Any]) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
        loop.call_soon_threadsafe(fn, cf)

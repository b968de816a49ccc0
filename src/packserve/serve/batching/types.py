"""Small types shared by the batcher: queue items, drain report, the disconnect probe."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from packserve.runtime.inputs import Feeds
from packserve.runtime.prediction import Prediction

__all__ = ["WATCH_AFTER_S", "ClientGone", "DrainReport", "Probe", "client_probe"]

Probe = Callable[[], Coroutine[Any, Any, bool]]
"""Returns True once the client has disconnected (False: it returned for another reason)."""

#: The disconnect probe of the request being handled in this task (set by the HTTP layer).
client_probe: ContextVar[Probe | None] = ContextVar("packserve_client_probe", default=None)

#: A queued request gets its disconnect watcher after waiting this long.
WATCH_AFTER_S = 0.005


class ClientGone(Exception):
    """The request left the queue because its client disconnected; nothing is sent back."""


@dataclass(frozen=True, slots=True)
class DrainReport:
    completed: bool  # everything queued before the drain finished in time
    abandoned: int  # requests failed with OverloadedError because the timeout passed


_QUEUED, _RUNNING, _DONE = 0, 1, 2


@dataclass(eq=False, slots=True)
class _Item:
    feeds: Feeds
    rows: int
    future: asyncio.Future[Prediction]
    enqueued: float
    timer: asyncio.TimerHandle | None = None
    probe: Probe | None = None
    watcher: asyncio.Task[bool] | None = None
    state: int = _QUEUED

    def settle(self) -> None:
        """Leave the queue: stop the deadline timer and the disconnect watcher."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.watcher is not None:
            self.watcher.cancel()
            self.watcher = None

"""Small types shared by the batcher: queue items, the drain report (the disconnect probe is
``serve/disconnect.py``'s, shared with the unbatched path)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from packserve.runtime.inputs import Feeds
from packserve.runtime.prediction import Prediction
from packserve.serve.disconnect import WATCH_AFTER_S, ClientGone, Probe, client_probe

__all__ = ["WATCH_AFTER_S", "ClientGone", "DrainReport", "Probe", "client_probe"]


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
    deadline: float | None = None
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

"""``run_watched``: a call still queued for a thread is never run once its client has gone.

One-thread pool, the thread held by a gated call; a second call queued behind it with a
probe. The probe answering "disconnected" cancels the queued call (ClientGone, never run);
a probe that never answers changes nothing; a cancelled caller drops its queued call too.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from packserve.serve.disconnect import WATCH_AFTER_S, ClientGone, run_watched


def _run(fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(fn())


class Pool:
    """One thread, held by ``hold()`` until ``release()``; ``calls`` lists what ran."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1)
        self.gate = threading.Event()
        self.started = threading.Event()
        self.calls: list[str] = []

    def _blocked(self) -> str:
        self.started.set()
        self.gate.wait(10)
        self.calls.append("busy")
        return "busy"

    def record(self, name: str) -> str:
        self.calls.append(name)
        return name

    async def hold(self) -> asyncio.Task[str]:
        task = asyncio.ensure_future(run_watched(self.executor, self._blocked))
        while not self.started.is_set():
            await asyncio.sleep(0.001)
        return task


def test_a_queued_call_whose_client_left_is_never_run() -> None:
    pool = Pool()
    gone = asyncio.Event()

    async def probe() -> bool:
        await gone.wait()
        return True

    async def main() -> None:
        busy = await pool.hold()
        queued = asyncio.ensure_future(run_watched(pool.executor, pool.record, "left", probe=probe))
        await asyncio.sleep(WATCH_AFTER_S * 4)  # watched by now
        gone.set()
        with pytest.raises(ClientGone):
            await asyncio.wait_for(queued, 5)
        pool.gate.set()
        assert await busy == "busy"
        assert await run_watched(pool.executor, pool.record, "next", probe=probe) == "next"

    _run(main)
    pool.executor.shutdown()
    assert pool.calls == ["busy", "next"]


def test_a_client_still_there_gets_its_answer() -> None:
    pool = Pool()

    async def probe() -> bool:
        await asyncio.Event().wait()  # never disconnects
        return True

    async def main() -> None:
        busy = await pool.hold()
        queued = asyncio.ensure_future(run_watched(pool.executor, pool.record, "stayed", probe=probe))
        await asyncio.sleep(WATCH_AFTER_S * 4)
        pool.gate.set()
        assert await busy == "busy"
        assert await asyncio.wait_for(queued, 5) == "stayed"

    _run(main)
    pool.executor.shutdown()
    assert pool.calls == ["busy", "stayed"]


def test_a_cancelled_caller_drops_its_queued_call() -> None:
    pool = Pool()

    async def probe() -> bool:
        await asyncio.Event().wait()
        return True

    async def main() -> None:
        busy = await pool.hold()
        queued = asyncio.ensure_future(run_watched(pool.executor, pool.record, "cancelled", probe=probe))
        await asyncio.sleep(0)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        pool.gate.set()
        await busy

    _run(main)
    pool.executor.shutdown(wait=True)
    assert pool.calls == ["busy"]


def test_errors_of_the_call_reach_the_caller() -> None:
    executor = ThreadPoolExecutor(max_workers=1)

    def fail() -> None:
        raise ValueError("boom")

    async def probe() -> bool:
        return False

    async def main() -> None:
        with pytest.raises(ValueError, match="boom"):
            await run_watched(executor, fail, probe=probe)

    _run(main)
    executor.shutdown()

"""The door's rule (``Admission.door``, ``LoopClock.lag``): what it sees at I/O time, that one
long pass is answered by one poll of refusals, that it counts nothing, and that its
per-model answers are ``enter``'s."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

from packserve.errors import OverloadedError
from packserve.serve.admission import MIN_BACKLOG, Admission, LoopClock
from packserve.serve.handle import ModelHandle
from packserve.serve.offload import CostModel

LOOPS: dict[str, Callable[[Coroutine[Any, Any, Any]], Any]] = {
    "asyncio": asyncio.run, "uvloop": uvloop.run,
}


def _handle(name: str = "m") -> ModelHandle:
    cost = CostModel(0.00025)
    cost.fixed_s, cost.per_row_s = 0.00001, 0.0
    return ModelHandle(name, "1", Path("."), None, cost=cost)


@pytest.mark.parametrize("loop", LOOPS)
def test_an_io_callback_after_a_long_pass_sees_that_pass(loop: str) -> None:
    """The premise of the door: a socket read right after a pass of requests that ran long
    (here 80 x 0.5 ms) learns of it, from the pass in progress or the one just recorded."""
    seen: list[tuple[float, int]] = []
    clock = LoopClock()

    class Reader(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            seen.append(clock.lag(time.monotonic()))

    async def main() -> None:
        a, b = socket.socketpair()
        await asyncio.get_running_loop().connect_accepted_socket(Reader, a)

        async def request() -> None:
            clock.elapsed(time.monotonic())
            time.sleep(0.0005)

        for _ in range(3):
            b.send(b"x")  # readable while the requests' pass runs
            for _ in range(80):
                asyncio.get_running_loop().create_task(request())
            await asyncio.sleep(0.02)
        b.close()

    LOOPS[loop](main())
    assert len(seen) == 3
    for seconds, count in seen[1:]:  # the first read may come before the first pass
        assert seconds >= 0.04 and count == 80, seen


def test_lag_reads_without_counting_and_forget_clears_the_last_pass() -> None:
    async def main() -> None:
        clock = LoopClock()
        clock.elapsed(time.monotonic())
        time.sleep(0.01)
        seconds, count = clock.lag(time.monotonic())
        assert seconds >= 0.01 and count == 1 and clock.count == 1  # in progress, not counted
        await asyncio.sleep(0)  # the pass ends: recorded
        assert clock.lag(time.monotonic()) == (clock.last_s, 1) and clock.last_s >= 0.01
        clock.forget()
        assert clock.lag(time.monotonic()) == (0.0, 0)

    asyncio.run(main())


def test_one_long_pass_is_answered_by_one_poll_of_refusals() -> None:
    async def main() -> None:
        adm = Admission(budget_ms=30)
        handle = _handle()
        clock = adm.clock
        clock.last_s, clock.last_count = 0.05, MIN_BACKLOG + 1  # a long, busy pass just ended
        now = time.monotonic()
        verdicts = [adm.door(handle, now) for _ in range(5)]  # one poll's requests
        assert all(v is not None and v[0] == "queue_delay" for v in verdicts)
        assert clock.count == 0 and adm.in_progress("m") == 0  # the door counted nothing
        await asyncio.sleep(0)  # the next pass: nobody ran, the record is spent
        assert adm.door(handle, time.monotonic()) is None
        # a long pass with few requests is not a backlog refusing could shrink
        clock.last_s, clock.last_count = 0.05, MIN_BACKLOG
        assert adm.door(handle, time.monotonic()) is None
        assert Admission(budget_ms=0).door(handle, time.monotonic()) is None  # admission off

    asyncio.run(main())


def test_the_door_says_what_enter_would_raise() -> None:
    async def main() -> None:
        adm = Admission(budget_ms=30, max_in_flight=2)
        handle = _handle()
        now = time.monotonic()
        for _ in range(2):
            assert adm.door(handle, now) is None
            adm.enter(handle, now)
        verdict = adm.door(handle, now)
        assert verdict is not None and verdict[0] == "in_flight"
        with pytest.raises(OverloadedError) as raised:
            adm.enter(handle, now)
        assert verdict[1].message == raised.value.message
        assert "2 requests in progress" in raised.value.message
        adm.leave(handle)
        assert adm.door(handle, now) is None

    asyncio.run(main())


def test_the_door_refuses_a_full_batcher_queue() -> None:
    class Batcher:
        max_batch_size, max_queue, concurrency, queue_depth = 64, 4, 1, 4

    async def main() -> None:
        adm = Admission(budget_ms=30)
        handle = _handle()
        handle.batcher = Batcher()  # type: ignore[assignment]
        verdict = adm.door(handle, time.monotonic())
        assert verdict is not None and verdict[0] == "queue_full"
        assert verdict[1].message == "model 'm' has 4 requests queued; retry later"
        Batcher.queue_depth = 3
        assert adm.door(handle, time.monotonic()) is None

    asyncio.run(main())

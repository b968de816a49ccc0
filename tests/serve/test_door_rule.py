"""The door's rule (``Admission.door``, ``LoopClock.lag``, ``PollQuota``): what it sees at
I/O time, that one long pass is answered by one poll of refusals, that it counts nothing, that
its per-model answers are ``enter``'s, and the per-iteration quota of a saturated loop."""

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
from packserve.serve.saturation import MIN_TURNS, ROUND_WEIGHT, UNLIMITED, PollQuota, Rounds

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
        assert clock.lag(time.monotonic()) == (0.0, 1)

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


class _Clocks:
    """Wall and CPU time the test moves: an iteration busy (CPU = wall) or idle."""

    def __init__(self) -> None:
        self.wall = self.cpu = 100.0

    def run(self, seconds: float, busy: bool) -> None:
        self.wall += seconds
        self.cpu += seconds if busy else seconds * 0.1


def test_the_quota_is_unlimited_until_the_loop_stays_saturated_then_shrinks_and_recovers() -> None:
    clocks = _Clocks()
    quota = PollQuota(floor=4, sustain_s=0.03, long_s=0.005, cpus=1,
                      clocks=(lambda: clocks.wall, lambda: clocks.cpu, lambda: clocks.cpu))

    async def iteration(requests: int, busy: bool, seconds: float = 0.01) -> int:
        passed = sum(quota.admit() for _ in range(requests))
        clocks.run(seconds, busy)
        await asyncio.sleep(0)  # the next iteration: its tick
        return passed

    async def main() -> None:
        # busy, in short iterations (a closed-loop client keeping a core busy): no limit
        assert [await iteration(200, busy=True, seconds=0.004) for _ in range(20)] == [200] * 20
        assert quota.quota == UNLIMITED
        # blocked, not busy (a model thread holding the CPU or the GIL looks like this): no limit
        assert [await iteration(200, busy=False) for _ in range(5)] == [200] * 5
        assert quota.quota == UNLIMITED
        # busy: after 30 ms of it the quota falls below what passed, x0.8 an iteration
        passed = [await iteration(100, busy=True) for _ in range(8)]
        assert passed == [100, 100, 100, 100, 80, 64, 51, 40], passed
        # never below a quarter of what arrives (a closed loop would sink it to the floor)
        for _ in range(20):
            await iteration(100, busy=True)
        assert quota.quota == 25
        # ... nor below the floor
        for _ in range(20):
            await iteration(8, busy=True)
        assert quota.quota == 4
        # iterations with idle time: it grows back, one step each (x1.1, +1)
        grown = []
        for _ in range(3):
            await iteration(1, busy=False)
            grown.append(quota.quota)
        assert grown == [5, 6, 7], grown
        # a short busy spell (< sustain_s) changes nothing
        for _ in range(2):
            await iteration(1, busy=True)
        assert quota.quota == 7

    asyncio.run(main())


def test_rounds_average_the_gaps_and_cap_an_idle_connection() -> None:
    rounds = Rounds(cap=0.02)
    for _ in range(400):
        rounds.add(0.003, 100)
    assert rounds.mean == pytest.approx(0.003, rel=1e-3)
    assert rounds.turns == pytest.approx(100, rel=1e-3)
    assert rounds.slow(0.002) and not rounds.slow(0.004) and not rounds.slow(0.0)
    before = rounds.mean
    rounds.add(60.0, 10**6)  # a keep-alive client back after a minute counts as the cap, once
    assert rounds.mean == pytest.approx(before + (0.02 - before) * ROUND_WEIGHT)
    assert rounds.turns < 4 * MIN_TURNS
    for _ in range(400):
        rounds.add(0.01, 64)  # a pool of 64 waits long turns: not slow, whatever a turn costs
    assert rounds.mean > 0.009 and not rounds.slow(0.005)


def test_slow_rounds_on_a_saturated_loop_shrink_the_quota_even_in_short_iterations() -> None:
    """256 connections at 2x: iterations stay short, yet every client waits a long round
    between turns. Busy and slow -> shrink; busy and in time -> grow back; idle -> never
    shrink; a pool of 64 waiting long turns (costly requests) -> never shrink."""
    clocks = _Clocks()
    quota = PollQuota(floor=4, sustain_s=0.03, long_s=0.005, round_s=0.004, cpus=1,
                      clocks=(lambda: clocks.wall, lambda: clocks.cpu, lambda: clocks.cpu))

    async def iteration(requests: int, busy: bool, gap: float, turns: int = 256) -> int:
        passed = sum(quota.admit() for _ in range(requests))
        for _ in range(requests):
            quota.rounds.add(gap, turns)
        clocks.run(0.002, busy)  # short iterations throughout
        await asyncio.sleep(0)
        return passed

    async def main() -> None:
        # a closed loop of 64 connections at capacity: busy, turns in ~3 ms: no limit
        assert [await iteration(100, True, 0.003, 64) for _ in range(30)] == [100] * 30
        # ... or of costly requests, ~10 ms a turn: still none
        assert [await iteration(100, True, 0.010, 64) for _ in range(30)] == [100] * 30
        assert quota.quota == UNLIMITED and not quota.slow_rounds
        # open-loop clients keeping up on a loop with idle time: long gaps, never shed
        for _ in range(30):
            await iteration(100, False, 0.012)
        assert quota.slow_rounds and quota.quota == UNLIMITED
        # busy and slow: shrinks once it has lasted sustain_s (15 iterations of 2 ms)
        passed = [await iteration(100, True, 0.012) for _ in range(20)]
        assert passed[:16] == [100] * 16 and passed[-1] < 100, passed
        # turns back in time while still busy: grows, one step an iteration
        low = quota.quota
        for _ in range(40):
            await iteration(low, True, 0.001)
        assert not quota.slow_rounds and quota.quota > low

    asyncio.run(main())


def test_the_door_refuses_beyond_the_quota_as_saturated() -> None:
    async def main() -> None:
        adm = Admission(budget_ms=30)
        adm.quota.quota = 3
        handle = _handle()
        verdicts = [adm.door(handle, time.monotonic()) for _ in range(5)]
        assert verdicts[:3] == [None, None, None]
        assert [v[0] if v else None for v in verdicts[3:]] == ["saturated", "saturated"]
        assert verdicts[3] is not None and verdicts[3][1].message == "the server is overloaded; retry later"
        assert adm.in_progress("m") == 0 and adm.clock.count == 0  # still nothing counted

    asyncio.run(main())


def test_the_bound_is_computed_once_a_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests above the floor (coalescing keeps many in progress) reuse the pass's bound."""
    calls: list[str] = []
    original = Admission.limit

    def counted(self: Admission, handle: ModelHandle) -> int:
        calls.append(handle.name)
        return original(self, handle)

    monkeypatch.setattr(Admission, "limit", counted)

    async def main() -> None:
        adm = Admission(budget_ms=30)
        handle = _handle()
        adm._counts["m"] = 3
        for _ in range(5):
            adm.enter(handle, time.monotonic())
            adm.door(handle, time.monotonic())
        assert calls == ["m"]
        await asyncio.sleep(0)  # a new pass: computed again
        adm.door(handle, time.monotonic())
        assert calls == ["m", "m"]

    asyncio.run(main())


def test_short_iterations_read_no_cpu_clock_until_a_long_one_needs_a_baseline() -> None:
    """At one connection every request is an iteration: the CPU clocks (a system call each)
    are read only when an iteration is long enough to matter, and then first as a baseline."""
    t = {"wall": 100.0, "reads": 0}

    def cpu() -> float:
        t["reads"] += 1
        return t["wall"]  # as busy as can be

    quota = PollQuota(floor=4, sustain_s=0.03, long_s=0.005, cpus=1,
                      clocks=(lambda: t["wall"], cpu, cpu))

    async def iterations(n: int, seconds: float) -> None:
        for _ in range(n):
            quota.admit()
            t["wall"] += seconds
            await asyncio.sleep(0)

    async def main() -> None:
        await iterations(50, 0.001)  # short: nothing to decide
        assert t["reads"] <= 2  # (the very first tick may read once)
        reads = t["reads"]
        await iterations(1, 0.01)  # the first long one: a baseline only
        assert t["reads"] == reads + 2 and quota.quota == UNLIMITED
        await iterations(6, 0.01)  # busy and long: saturation is still seen
        assert quota.quota < UNLIMITED

    asyncio.run(main())


def test_the_door_is_skipped_only_while_no_rule_could_refuse() -> None:
    """``pressed`` (the engine's O(1) question before the door's look): False while calm; True
    once a model reaches the floor of its bound, after a long pass, or while the quota acts."""
    async def main() -> None:
        adm = Admission(budget_ms=30)
        a, b = _handle("a"), _handle("b")
        assert not adm.pressed()
        adm.enter(a, time.monotonic())
        assert not adm.pressed()  # one in progress: no bound binds below two
        bound = adm.limit(a)
        for _ in range(bound // 2 - 2):
            adm.enter(a, time.monotonic())
        assert not adm.pressed()  # far from its bound (a cheap model's shared-call waiters)
        adm.enter(a, time.monotonic())
        assert adm.pressed()  # half way
        adm.enter(b, time.monotonic())
        for _ in range(bound // 2 - 1):
            adm.leave(a)
        assert not adm.pressed()
        adm.leave(a)
        adm.leave(b)
        adm.clock.last_s = 0.02  # a long pass
        assert adm.pressed()
        adm.clock.last_s = 0.0
        adm.quota.quota = 100
        assert adm.pressed()
        adm.quota.quota = UNLIMITED
        assert not adm.pressed()
        assert not Admission(budget_ms=0).pressed()  # admission off: nothing to refuse
        one = Admission(budget_ms=30, max_in_flight=1)
        one.enter(a, time.monotonic())
        assert one.pressed()  # an explicit bound of one binds at one

    asyncio.run(main())

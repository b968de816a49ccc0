"""Batcher unit tests: real concurrency on a real event loop, real and fake predictors."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest

from packserve.errors import DeadlineExceededError, InferenceError, OverloadedError
from packserve.runtime import Prediction, Predictor, load
from packserve.serve.batching import WATCH_AFTER_S, BatchCostFit, Batcher, ClientGone, WaitPolicy
from packserve.serve.offload import CostModel

# --- fakes -----------------------------------------------------------------------------------


class FakeModel:
    """``run`` returns each row's id (column 0) as its value; records every call's ids.

    ``gate`` (when given) blocks every call until set: tests use it to hold the model busy
    and build a queue deterministically. ``poison`` ids make a call fail.
    """

    def __init__(self, *, gate: threading.Event | None = None, delay: float = 0.0) -> None:
        self.gate = gate
        self.delay = delay
        self.calls: list[list[int]] = []
        self.started = threading.Event()
        self.poison: set[int] = set()
        self.error: Exception = InferenceError("boom")

    def run(self, feeds: dict[str, np.ndarray]) -> Prediction:
        ids = [int(v) for v in feeds["x"][:, 0]]
        self.calls.append(ids)
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(10), "test gate never opened"
        if self.delay:
            time.sleep(self.delay)
        if self.poison.intersection(ids):
            raise self.error
        return Prediction(values=feeds["x"][:, 0].copy())


def feeds(*ids: int) -> dict[str, np.ndarray]:
    return {"x": np.asarray(ids, dtype=np.float64).reshape(-1, 1)}


def values(p: Prediction) -> list[int]:
    assert p.values is not None
    return [int(v) for v in p.values]


def run_async(fn: Callable[[], object]) -> object:
    return asyncio.run(fn())  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def started(batcher: Batcher) -> AsyncIterator[Batcher]:
    """The batcher bound to the running loop, closed at the end even when an assert failed
    (close never blocks: queued requests are failed, the private executor let go)."""
    batcher.start()
    try:
        yield batcher
    finally:
        batcher.close()


async def wait_for_thread(event: threading.Event) -> None:
    for _ in range(1000):
        if event.is_set():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("model call never started")


# --- real model: merging and per-caller correctness ------------------------------------------


@pytest.fixture(scope="module")
def predictor(chapter_bundle: Path) -> Predictor:
    return load(chapter_bundle)


def test_concurrent_requests_are_merged_and_each_gets_its_rows(predictor, chapter_data):
    x = chapter_data.x_test[:40]
    expected = [predictor.run(predictor.to_feeds(x[i : i + 1])) for i in range(len(x))]

    async def main() -> list[Prediction]:
        async with started(Batcher(predictor.run, max_batch_size=64, max_wait_ms=0, max_queue=100)) as b:
            before = predictor.calls
            out = await asyncio.gather(*(b.submit(predictor.to_feeds(x[i : i + 1])) for i in range(len(x))))
            # first request runs at once (idle model), the other 39 queue behind it: one more call
            assert predictor.calls - before == 2
            assert b.stats.batches == 2 and b.stats.max_batch_rows == 39
        return out

    got = run_async(main)
    assert isinstance(got, list)
    for g, e in zip(got, expected, strict=True):
        assert g.labels is not None and e.labels is not None
        assert g.labels.tolist() == e.labels.tolist()
        np.testing.assert_allclose(g.probabilities, e.probabilities, rtol=1e-6, atol=1e-7)


def test_multi_row_requests_merge_up_to_the_row_limit_and_big_ones_run_alone(predictor, chapter_data):
    x = chapter_data.x_test
    sizes = [1, 5, 3, 7, 20, 2, 2, 9]  # 20 > max_batch_size: runs alone, unsplit
    starts = np.cumsum([0, *sizes])
    chunks = [x[starts[i] : starts[i + 1]] for i in range(len(sizes))]

    async def main() -> list[Prediction]:
        async with started(Batcher(predictor.run, max_batch_size=16, max_wait_ms=0, max_queue=100)) as b:
            before = predictor.calls
            out = await asyncio.gather(*(b.submit(predictor.to_feeds(c)) for c in chunks))
            # [1] | [5,3,7] | [20] | [2,2,9]
            assert predictor.calls - before == 4
            assert b.stats.max_batch_rows == 20
        return out

    got = run_async(main)
    assert isinstance(got, list)
    for g, c in zip(got, chunks, strict=True):
        e = predictor.run(predictor.to_feeds(c))
        assert len(g) == len(c)
        assert g.labels.tolist() == e.labels.tolist()  # type: ignore[union-attr]
        np.testing.assert_allclose(g.probabilities, e.probabilities, rtol=1e-6, atol=1e-7)


def test_idle_request_is_not_delayed_by_max_wait(predictor, chapter_data):
    x = chapter_data.x_test

    async def main() -> None:
        # a huge wait budget: if the batcher waited for company, this would take 60 s
        async with started(Batcher(predictor.run, max_batch_size=64, max_wait_ms=60_000, max_queue=100)) as b:
            # teach the cost model a real fixed cost and a fast arrival stream first
            for n in (1, 8, 1, 32, 4, 16):
                await asyncio.wait_for(b.submit(predictor.to_feeds(x[:n])), 10)
            await asyncio.sleep(0.2)  # then idle
            t0 = time.monotonic()
            p = await asyncio.wait_for(b.submit(predictor.to_feeds(x[:1])), 10)
            assert len(p) == 1
            assert time.monotonic() - t0 < 10  # structurally: far below max_wait (60 s)

    run_async(main)


# --- overload, deadlines, cancellation -------------------------------------------------------


def test_full_queue_is_rejected_at_once_with_retry_after():
    gate = threading.Event()
    model = FakeModel(gate=gate)

    async def main() -> None:
        async with started(Batcher(model.run, max_batch_size=8, max_wait_ms=0, max_queue=2)) as b:
            running = asyncio.ensure_future(b.submit(feeds(1)))
            await wait_for_thread(model.started)
            queued = [asyncio.ensure_future(b.submit(feeds(i))) for i in (2, 3)]
            await asyncio.sleep(0)
            assert b.queue_depth == 2
            t0 = time.monotonic()
            with pytest.raises(OverloadedError) as info:
                await b.submit(feeds(4))
            assert time.monotonic() - t0 < 1.0
            assert info.value.retry_after_s > 0
            assert info.value.http_status == 503
            assert b.stats.rejected == 1
            gate.set()
            assert values(await running) == [1]
            assert [values(await q) for q in queued] == [[2], [3]]

    run_async(main)
    assert [4] not in model.calls and all(4 not in c for c in model.calls)


def test_deadline_passed_at_batch_assembly_is_not_computed_even_before_its_timer_ran():
    """A busy loop: the batch in the thread finishes and the queued request's deadline passes
    in the same stall, so the next batch is assembled before the expiry timer has run."""
    gate = threading.Event()
    model = FakeModel(gate=gate)

    async def main() -> None:
        async with started(Batcher(model.run, max_batch_size=8, max_wait_ms=0, max_queue=10)) as b:
            running = asyncio.ensure_future(b.submit(feeds(1)))
            await wait_for_thread(model.started)
            late = asyncio.ensure_future(b.submit(feeds(2), deadline=time.monotonic() + 0.05))
            await asyncio.sleep(0)  # queued
            gate.set()
            time.sleep(0.3)  # the loop stalls: the batch ends, the deadline passes, nothing runs
            assert values(await running) == [1]
            with pytest.raises(DeadlineExceededError):
                await asyncio.wait_for(late, 5)
            assert b.stats.expired == 1

    run_async(main)
    assert model.calls == [[1]]


def test_deadline_passing_in_queue_answers_and_is_not_computed():
    gate = threading.Event()
    model = FakeModel(gate=gate)

    async def main() -> None:
        async with started(Batcher(model.run, max_batch_size=8, max_wait_ms=0, max_queue=10)) as b:
            running = asyncio.ensure_future(b.submit(feeds(1)))
            await wait_for_thread(model.started)
            late = asyncio.ensure_future(b.submit(feeds(2), deadline=time.monotonic() + 0.05))
            ok = asyncio.ensure_future(b.submit(feeds(3), deadline=time.monotonic() + 30))
            with pytest.raises(DeadlineExceededError):
                await asyncio.wait_for(late, 5)  # answered while the model is still busy
            assert not gate.is_set()
            assert b.queue_depth == 1
            gate.set()
            assert values(await running) == [1]
            assert values(await ok) == [3]
            with pytest.raises(DeadlineExceededError):  # already past: refused at submit
                await b.submit(feeds(5), deadline=time.monotonic() - 1)
            assert b.stats.expired == 2

    run_async(main)
    assert model.calls == [[1], [3]]


def test_probe_reporting_a_disconnect_drops_a_queued_request():
    gate = threading.Event()
    model = FakeModel(gate=gate)

    async def main() -> None:
        async with started(Batcher(model.run, max_batch_size=8, max_wait_ms=0, max_queue=10)) as b:
            running = asyncio.ensure_future(b.submit(feeds(1)))
            await wait_for_thread(model.started)
            hang_up = asyncio.Event()
            probes = []

            async def probe() -> bool:
                probes.append(1)
                await hang_up.wait()
                return True

            async def never() -> bool:
                await asyncio.Event().wait()
                return False

            gone = asyncio.ensure_future(b.submit(feeds(2), probe=probe))
            stays = asyncio.ensure_future(b.submit(feeds(3), probe=never))
            await asyncio.sleep(WATCH_AFTER_S * 4)
            assert probes == [1]  # started only once the request had waited a while
            hang_up.set()
            with pytest.raises(ClientGone):
                await asyncio.wait_for(gone, 5)
            assert b.queue_depth == 1 and b.stats.cancelled == 1
            gate.set()
            assert values(await running) == [1]
            assert values(await stays) == [3]

    run_async(main)
    assert model.calls == [[1], [3]]


def test_cancelled_caller_is_dropped_from_its_batch():
    gate = threading.Event()
    model = FakeModel(gate=gate)

    async def main() -> None:
        async with started(Batcher(model.run, max_batch_size=8, max_wait_ms=0, max_queue=10)) as b:
            running = asyncio.ensure_future(b.submit(feeds(1)))
            await wait_for_thread(model.started)
            gone = asyncio.ensure_future(b.submit(feeds(2)))
            stays = asyncio.ensure_future(b.submit(feeds(3)))
            await asyncio.sleep(0)
            gone.cancel()  # client disconnected while queued
            await asyncio.sleep(0)
            assert b.queue_depth == 1
            gate.set()
            assert values(await running) == [1]
            assert values(await stays) == [3]
            assert gone.cancelled()
            assert b.stats.cancelled == 1

    run_async(main)
    assert model.calls == [[1], [3]]


# --- isolation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error", [InferenceError("boom"), RuntimeError("/srv/secret/model.onnx: bad alloc")]
)
def test_failing_model_call_fails_only_its_batch(error):
    gate = threading.Event()
    model = FakeModel(gate=gate)
    model.poison = {66}
    model.error = error

    async def main() -> None:
        async with started(Batcher(model.run, max_batch_size=8, max_wait_ms=0, max_queue=10)) as b:
            first = asyncio.ensure_future(b.submit(feeds(1)))
            await wait_for_thread(model.started)
            bad = asyncio.ensure_future(b.submit(feeds(66)))
            neighbour = asyncio.ensure_future(b.submit(feeds(2, 3)))
            gate.set()
            assert values(await first) == [1]
            errors = []
            for f in (bad, neighbour):
                with pytest.raises(InferenceError) as info:
                    await f
                errors.append(info.value)
            assert errors[0] is not errors[1]  # each caller gets its own exception object
            for e in errors:
                body = e.to_dict()
                assert body["error"] == "inference_failed"
                assert "/srv" not in str(body) and "Traceback" not in str(body)
            assert values(await b.submit(feeds(4))) == [4]  # the model keeps serving
            assert b.stats.failed == 2

    run_async(main)
    assert model.calls == [[1], [66, 2, 3], [4]]


def test_model_returning_wrong_row_count_is_an_inference_error():
    def short(f: dict[str, np.ndarray]) -> Prediction:
        return Prediction(values=f["x"][:-1, 0])

    async def main() -> None:
        async with started(Batcher(short, max_batch_size=8, max_wait_ms=0, max_queue=10)) as b:
            with pytest.raises(InferenceError):
                await b.submit(feeds(1, 2))

    run_async(main)


# --- drain -----------------------------------------------------------------------------------


def test_drain_completes_queued_work_and_refuses_new():
    gate = threading.Event()
    model = FakeModel(gate=gate)

    async def main() -> None:
        async with started(Batcher(model.run, max_batch_size=2, max_wait_ms=5, max_queue=50)) as b:
            futs = [asyncio.ensure_future(b.submit(feeds(i))) for i in range(7)]
            await wait_for_thread(model.started)
            drain = asyncio.ensure_future(b.drain(timeout=20))
            await asyncio.sleep(0)
            with pytest.raises(OverloadedError):
                await b.submit(feeds(99))
            gate.set()
            report = await drain
            assert report.completed and report.abandoned == 0
            assert [values(f.result()) for f in futs] == [[i] for i in range(7)]

    run_async(main)
    assert sorted(i for c in model.calls for i in c) == list(range(7))


def test_drain_timeout_fails_leftovers_explicitly():
    gate = threading.Event()
    model = FakeModel(gate=gate)

    async def main() -> None:
        async with started(Batcher(model.run, max_batch_size=1, max_wait_ms=0, max_queue=50)) as b:
            futs = [asyncio.ensure_future(b.submit(feeds(i))) for i in range(4)]
            await wait_for_thread(model.started)
            report = await b.drain(timeout=0.1)
            assert not report.completed and report.abandoned == 3
            for f in futs[1:]:
                with pytest.raises(OverloadedError):
                    await f
            gate.set()
            assert values(await futs[0]) == [0]  # the running batch still answers its caller

    run_async(main)


# --- the wait policy -------------------------------------------------------------------------


def test_cost_model_recovers_fixed_and_per_row_cost():
    cm = BatchCostFit(alpha=0.2)
    for n in [1, 4, 16, 64, 2, 32, 8] * 5:
        cm.observe(n, 0.002 + 0.0001 * n)
    assert cm.fixed_s == pytest.approx(0.002, rel=0.05)
    assert cm.per_row_s == pytest.approx(0.0001, rel=0.05)


def test_cost_model_ignores_a_cold_first_call_and_follows_a_slower_machine():
    cm = BatchCostFit(alpha=0.2)
    cm.observe(1, 0.5)  # cold start: thread spawn, allocations
    for _ in range(3):
        cm.observe(1, 0.001)
    assert cm.estimate(1) == pytest.approx(0.001, rel=0.01)
    for n in [1, 4, 16, 64, 2, 32, 8] * 5:
        cm.observe(n, 0.002 + 0.0001 * n)
    for _ in range(60):  # then only single rows, twice as slow: the estimate follows
        cm.observe(1, 2 * 0.0021)
    assert cm.estimate(1) == pytest.approx(0.0042, rel=0.05)
    assert cm.fixed_s > cm.per_row_s > 0  # and a fixed cost, once learned, is not forgotten


def test_wait_policy_waits_only_when_a_merge_saves_more_than_it_costs():
    cm = BatchCostFit()
    cm.fixed_s, cm.per_row_s = 0.004, 0.0001
    pol = WaitPolicy(max_batch_size=32, max_wait_s=0.010, cost=cm)
    for t in np.arange(0, 0.01, 0.0005):  # an arrival every 0.5 ms
        pol.arrived(float(t))
    now = pol.last_arrival or 0.0
    until = pol.wait_until(now, queued=1, rows=1, oldest=now)
    assert until is not None and now < until <= now + 0.004  # waits at most the fixed cost
    assert pol.wait_until(now, queued=9, rows=9, oldest=now) is None  # 9 x 0.5 ms > 4 ms
    assert pol.wait_until(now, queued=1, rows=32, oldest=now) is None  # batch full
    assert pol.wait_until(now + 0.02, queued=1, rows=1, oldest=now) is None  # silence
    assert pol.wait_until(now, queued=1, rows=1, oldest=now - 0.011) is None  # budget spent
    cm.fixed_s = 0.0
    assert pol.wait_until(now, queued=1, rows=1, oldest=now) is None  # nothing to save
    slow = WaitPolicy(max_batch_size=32, max_wait_s=10.0, cost=BatchCostFit(fixed_s=0.004))
    slow.arrived(0.0)
    slow.arrived(0.5)  # one client, requests far apart
    assert slow.wait_until(0.5, queued=1, rows=1, oldest=0.5) is None


# --- inline mode (tiny models) ---------------------------------------------------------------


def measured(
    run: Callable[[dict[str, np.ndarray]], Prediction], *, inline_max_ms: float
) -> tuple[Callable[[dict[str, np.ndarray]], Prediction], Callable[[int], bool]]:
    """``run`` timed into a serve-layer CostModel, and that model's inline rule: what the
    server hands a batcher (``ModelHandle._run`` observes every call; ``cost.inline``)."""
    cost = CostModel(inline_max_ms / 1000.0)

    def timed(f: dict[str, np.ndarray]) -> Prediction:
        t0 = time.perf_counter()
        out = run(f)
        cost.observe(len(f["x"]), time.perf_counter() - t0)
        return out

    return timed, cost.inline


def test_inline_mode_runs_an_idle_request_on_the_loop_and_concurrent_ones_in_the_thread():
    threads: list[str] = []

    def run(f: dict[str, np.ndarray]) -> Prediction:
        threads.append(threading.current_thread().name)
        return Prediction(values=f["x"][:, 0].copy())

    async def main() -> None:
        timed, inline = measured(run, inline_max_ms=50)
        async with started(Batcher(timed, max_batch_size=64, max_wait_ms=0, max_queue=100,
                                   inline=inline)) as b:
            assert values(await b.submit(feeds(0))) == [0]  # cost unknown: first call in a thread
            assert values(await b.submit(feeds(1))) == [1]  # idle and alone: on the loop
            out = await asyncio.gather(*(b.submit(feeds(i)) for i in range(2, 22)))
            assert [values(p) for p in out] == [[i] for i in range(2, 22)]
            # 20 in one loop turn: the first finds the model idle and alone and runs at once; the
            # second is evidence of concurrency and goes to the thread; the other 18 queue
            # behind it and share the next call
            assert b.stats.batches == 5 and b.stats.max_batch_rows == 18

    run_async(main)
    main_thread = threading.main_thread().name
    assert [t == main_thread for t in threads] == [False, True, True, False, False]


def test_inline_request_at_idle_completes_without_a_loop_turn():
    def run(f: dict[str, np.ndarray]) -> Prediction:
        time.sleep(0.001)
        return Prediction(values=f["x"][:, 0].copy())

    async def main() -> None:
        timed, inline = measured(run, inline_max_ms=50)
        async with started(Batcher(timed, max_batch_size=64, max_wait_ms=1000, max_queue=100,
                                   inline=inline)) as b:
            await b.submit(feeds(0))  # measured once (in the thread)
            await asyncio.sleep(0.05)  # idle, and the next arrival is spaced out
            coro = b.submit(feeds(7))
            with pytest.raises(StopIteration) as done:
                coro.send(None)  # finished on its first step: it never waited for anything
            assert values(done.value.value) == [7]

    run_async(main)


def test_inline_mode_never_runs_an_expensive_batch_on_the_loop():
    model = FakeModel(delay=0.02)
    threads: list[str] = []

    def run(f: dict[str, np.ndarray]) -> Prediction:
        threads.append(threading.current_thread().name)
        return model.run(f)

    async def main() -> None:
        timed, inline = measured(run, inline_max_ms=1)
        async with started(Batcher(timed, max_batch_size=64, max_wait_ms=0, max_queue=100,
                                   inline=inline)) as b:
            for i in range(3):
                assert values(await b.submit(feeds(i))) == [i]

    run_async(main)
    assert all(t.startswith("packserve-batch") for t in threads)


def test_close_answers_queued_requests_instead_of_leaving_them_hanging():
    gate = threading.Event()
    model = FakeModel(gate=gate)

    async def main() -> None:
        b = Batcher(model.run, max_batch_size=1, max_wait_ms=0, max_queue=10)
        b.start()
        futs = [asyncio.ensure_future(b.submit(feeds(i))) for i in range(3)]
        await wait_for_thread(model.started)
        b.close()
        for f in futs[1:]:
            with pytest.raises(OverloadedError):
                await asyncio.wait_for(f, 5)
        gate.set()

    run_async(main)


def test_inline_fast_path_failure_is_a_clean_inference_error():
    calls = []

    def run(f: dict[str, np.ndarray]) -> Prediction:
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("/srv/secret/model.onnx: boom")
        return Prediction(values=f["x"][:, 0].copy())

    async def main() -> None:
        timed, inline = measured(run, inline_max_ms=50)
        async with started(Batcher(timed, max_batch_size=8, max_wait_ms=0, max_queue=10, inline=inline)) as b:
            await b.submit(feeds(1))
            await asyncio.sleep(0.01)
            with pytest.raises(InferenceError) as info:
                await b.submit(feeds(2))
            assert "/srv" not in str(info.value.to_dict())
            assert b.stats.failed == 1 and b.in_flight == 0 and b.queue_depth == 0

    run_async(main)

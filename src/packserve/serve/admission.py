"""Admission control: shed overload at the door, before a request's body is parsed.

Without it an overloaded server accepts everything, queues it (in the event loop, in the
kernel's socket buffers, in the executor or the batcher) and answers late: clients that give
up after a few seconds still get their work computed, accepted latency grows to the clients'
timeout and health checks wait behind the queue. Two signals decide, both before the body is
read (so a refused request costs a fraction of an accepted one):

* **queueing delay** — how long the current event-loop pass has been running
  (:class:`LoopClock`). Requests that arrived while the loop was busy are served in one
  pass; when that pass has already run for more than ``budget_s`` (and carries a real
  backlog, :data:`MIN_BACKLOG` requests), the requests behind it waited at least that long:
  new ones are refused until the loop catches up. This is the
  signal for cheap models computed on the loop, whose queue is invisible to the app (it sits
  in socket buffers and the loop's ready queue).
* **accepted work per model** — requests routed to a model and not yet answered (in flight
  plus queued in the executor or batcher). The bound is sized from the model's measured
  per-call cost so that the admitted work drains within ``budget_s``
  (``budget_s * parallelism / cost``, at least two per thread; batched: at least a full
  batch running per thread plus one filling), or set explicitly
  (``max_in_flight``). With batching, a full batcher queue is also refused here, before
  the body is parsed, so the batcher's own late 503 is only a backstop for a race.

Beyond either, the request gets 503 with ``Retry-After`` at once (:class:`OverloadedError`).

**The door** (:meth:`Admission.door`): the same rules asked once more, earlier — by the HTTP
engine's parser callback, as soon as a request's headers are parsed, before any ASGI task
exists (uvicorn: :mod:`packserve.serve.door`). A refusal on the ASGI path costs ~0.56 of a
served request of a fast inline model (the engine's request cycle, task and ASGI call chain),
which caps what one core can shed below 2x its capacity (issue #15 notes, Session 4); at the
door it costs the parse and one write. The door only reads (its own metrics aside): a request
it lets through meets :meth:`Admission.enter` as before and is counted there only.

At I/O time the current pass's clock is no signal (on uvloop the reset of the pass that just
ran the requests' tasks has already run when the next requests are read), so :class:`LoopClock`
records each pass's length and request count when it resets, and the door refuses on the
*last* pass: longer than ``budget_s`` with more than :data:`MIN_BACKLOG` requests. One such
pass is answered by one poll's worth of refusals: the door's first loop refusal schedules
``forget`` for the next pass, so the record does not keep refusing when no request ran since
(with everything refused, no pass would ever record a shorter one). Under open-loop overload
the loop then alternates: a pass serving what the previous poll admitted (growing ~2x per pass
at 2x offered load, until one exceeds the budget), one poll refusing what arrived meanwhile
(cost ``r`` each, r << 1), then accepting again. Accepted work per pass stays within about
twice the budget, so accepted latency stays within a few budgets; with every pass busy,
accepted throughput is ``C (1 - f r) / (1 - r)`` for ``f x`` offered load, positive while
``r < 1/f``. That pass-length rule keeps accepted latency bounded but not the clients' own
queues: the door also lets only a quota of requests through per iteration while the loop is
saturated (:mod:`packserve.serve.saturation`, reason ``saturated``).
Health, readiness and ``/metrics`` never pass through here. A per-request deadline
(``X-Request-Timeout-Ms`` header, ``timeout_ms`` setting; the earlier wins) makes work still
queued when it passes a 504 instead of a late answer (:meth:`Admission.deadline`).
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter

from packserve.errors import OverloadedError
from packserve.serve.registry import ModelHandle
from packserve.serve.saturation import MIN_TURNS, UNLIMITED, PollQuota

__all__ = ["MIN_BACKLOG", "TIMEOUT_HEADER", "Admission", "LoopClock"]

#: request header: the client's remaining budget in milliseconds (work after it -> 504)
TIMEOUT_HEADER = b"x-request-timeout-ms"

_MAX_LIMIT = 10_000
#: a long pass sheds only when it carries at least this many requests: a pass made long by
#: something else (a model loading in a thread, the process descheduled on a busy host)
#: with a few clients behind it is not a backlog that refusing could shrink
MIN_BACKLOG = 64


class LoopClock:
    """How long the current event-loop pass has been running (seconds), and how many
    requests it has started (``count``); and the last completed pass's (``last_s``,
    ``last_count``, for the door: see the module doc; ``last_count`` > 1 also tells
    :mod:`packserve.serve.coalesce` that requests are arriving together).

    The first caller in a pass stamps the time and schedules a reset with ``call_soon``;
    that callback runs only after every callback already queued for this pass, i.e. at the
    start of the next pass. Costs one clock read per request and one callback and clock read
    per busy pass; nothing at all while idle.
    """

    __slots__ = ("_armed", "_start", "count", "last_count", "last_s", "passes")

    def __init__(self) -> None:
        self._start = 0.0
        self._armed = False
        self.count = 0
        self.last_s = 0.0
        self.last_count = 0
        self.passes = 0

    def elapsed(self, now: float) -> float:
        if self._armed:
            self.count += 1
            return now - self._start
        self._armed = True
        self._start = now
        self.count = 1
        asyncio.get_running_loop().call_soon(self._reset)
        return 0.0

    def lag(self, now: float) -> tuple[float, int]:
        """(seconds, requests) of the pass in progress if one is, else of the last one;
        reads only (``count`` is not touched)."""
        if self._armed:
            return now - self._start, self.count
        return self.last_s, self.last_count

    def forget(self) -> None:
        """The last pass has been answered (by the door's refusals): stop reporting it as
        long (its count stays: coalescing reads it, serve/coalesce.py)."""
        self.last_s = 0.0

    def _reset(self) -> None:
        self._armed = False
        self.passes += 1
        self.last_s = time.monotonic() - self._start
        self.last_count = self.count


def _loop_overloaded() -> OverloadedError:
    return OverloadedError("the server is overloaded; retry later", retry_after_s=1.0)


#: the door's answer for the loop rules: rendered, never raised (one object, not one a refusal)
_LOOP_OVERLOADED = _loop_overloaded()


def _queue_full(name: str, depth: int) -> OverloadedError:
    return OverloadedError(
        f"model {name!r} has {depth} requests queued; retry later", retry_after_s=1.0
    )


def _in_flight(name: str, n: int) -> OverloadedError:
    return OverloadedError(
        f"model {name!r} has {n} requests in progress; retry later", retry_after_s=1.0
    )


#: the door's answers for the model rules: rendered, never raised, so one object per message
#: serves every refusal that says it (under overload a count repeats thousands of times)
_door_queue_full = functools.lru_cache(maxsize=256)(_queue_full)
_door_in_flight = functools.lru_cache(maxsize=256)(_in_flight)


class Admission:
    """One per app: ``enter(handle, now)`` before reading a body, ``leave(handle)`` after."""

    def __init__(
        self,
        *,
        budget_ms: float,
        max_in_flight: int = 0,
        parallelism: int = 1,
        timeout_ms: float = 0.0,
        metrics_registry: CollectorRegistry | None = None,
    ) -> None:
        self.budget_s = max(budget_ms, 0.0) / 1000.0
        self.max_in_flight = max_in_flight
        self.parallelism = max(1, parallelism)
        self.timeout_s = max(timeout_ms, 0.0) / 1000.0
        self.clock = LoopClock()
        #: the door's per-iteration quota while the loop is saturated (serve/saturation.py)
        self.quota = PollQuota(sustain_s=self.budget_s, long_s=self.budget_s / 4,
                               round_s=self.budget_s / 6)
        self._forgetting = False
        self._limits: dict[ModelHandle, tuple[int, int]] = {}
        self._counts: dict[str, int] = {}
        #: in progress from which a model's bound may bind (limit() is never below it)
        self._floor = min(2, max_in_flight) if max_in_flight else 2
        self._near: set[str] = set()  # models with half their bound in progress (or more)
        self._reject_inc: dict[tuple[str, str], Callable[[], None]] = {}
        self.rejected = Counter(
            "packserve_admission_rejected", "requests refused at the door (503), by reason",
            ["model", "reason"], registry=metrics_registry,
        ) if metrics_registry is not None else None

    @property
    def enabled(self) -> bool:
        return self.budget_s > 0 or self.max_in_flight > 0

    def limit(self, handle: ModelHandle) -> int:
        """Accepted requests allowed for ``handle``'s model (in flight + queued)."""
        if self.max_in_flight:
            return self.max_in_flight
        batcher = handle.batcher
        cost = handle.cost
        if batcher is not None:
            size = batcher.max_batch_size
            per_request = cost.estimate(size) / size
            parallel = batcher.concurrency
            # a full batch running per thread and the next one filling: fewer and batches
            # never fill, so overload would cut the batcher's throughput, not just its queue
            floor = size * (parallel + 1)
        else:
            per_request = cost.estimate(1)
            parallel = 1 if cost.inline(1) else self.parallelism
            # one running and one waiting per thread: arrivals a moment apart must not
            # bounce off a model that is merely busy
            floor = 2 * parallel
        if not per_request > 0 or math.isinf(per_request):
            limit = _MAX_LIMIT
        else:
            limit = int(self.budget_s * parallel / per_request)
        return max(floor, min(limit, _MAX_LIMIT))

    def enter(self, handle: ModelHandle, now: float) -> None:
        """Admit one request to ``handle`` or raise :class:`OverloadedError` (503) at once.

        Admitted requests hold the handle (``in_flight``) until :meth:`leave`: an unload or a
        newer version waits for them.
        """
        name = handle.name
        clock = self.clock
        # the clock runs even without a budget: coalescing reads it (LoopClock.last_count)
        if clock.elapsed(now) > self.budget_s > 0 and clock.count > MIN_BACKLOG:
            self._reject(name, "queue_delay")
            raise _loop_overloaded()
        batcher = handle.batcher
        if batcher is not None and batcher.queue_depth >= batcher.max_queue and self.enabled:
            # the batcher would refuse it after parsing: refuse it now, for a fraction of that
            self._reject(name, "queue_full")
            raise _queue_full(name, batcher.queue_depth)
        n = self._counts.get(name, 0)
        # limit() is never below 2 (or an explicit max_in_flight below 2): most requests find
        # fewer in progress and skip computing it (~0.5 µs a request on the hot path)
        if n + 1 >= self._floor and self.enabled:
            bound = self._bound(handle)
            if n >= bound:
                self._reject(name, "in_flight")
                raise _in_flight(name, n)
            if n + 1 >= bound // 2:  # half way to its bound: the door looks again (pressed)
                self._near.add(name)
        self._counts[name] = n + 1
        handle.in_flight += 1

    def door(self, handle: ModelHandle, now: float) -> tuple[str, OverloadedError] | None:
        """Would a request for ``handle`` be refused now, at the door (module doc)?

        (reason, the error :meth:`enter` would raise) or None. Counts nothing: the caller
        that does refuse calls :meth:`refused` (it may still fall back to the ASGI path).
        """
        if not self.enabled:
            return None
        name = handle.name
        if self.budget_s > 0:
            seconds, count = self.clock.lag(now)
            if seconds > self.budget_s and count > MIN_BACKLOG:
                if not self._forgetting:
                    self._forgetting = True
                    asyncio.get_running_loop().call_soon(self._forget)
                return "queue_delay", _LOOP_OVERLOADED
        batcher = handle.batcher
        if batcher is not None and batcher.queue_depth >= batcher.max_queue:
            return "queue_full", _door_queue_full(name, batcher.queue_depth)
        n = self._counts.get(name, 0)
        floor = self._floor
        if n >= floor and n >= self._bound(handle):
            return "in_flight", _door_in_flight(name, n)
        if self.budget_s > 0 and not self.quota.admit():
            return "saturated", _LOOP_OVERLOADED
        return None

    def refused(self, handle: ModelHandle, reason: str) -> None:
        """Count a refusal :meth:`door` decided and the door sent."""
        self._reject(handle.name, reason)

    def _forget(self) -> None:
        self._forgetting = False
        self.clock.forget()

    def _bound(self, handle: ModelHandle) -> int:
        """:meth:`limit`, computed once per loop pass and model version (~1 µs each time):
        requests waiting for a shared call (coalescing) keep most requests above the floor,
        and the door asks as well as :meth:`enter`."""
        if self.max_in_flight:
            return self.max_in_flight
        passes = self.clock.passes
        hit = self._limits.get(handle)
        if hit is not None and hit[0] == passes:
            return hit[1]
        limit = self.limit(handle)
        if len(self._limits) > 64:  # versions come and go
            self._limits.clear()
        self._limits[handle] = (passes, limit)
        return limit

    def leave(self, handle: ModelHandle) -> None:
        handle.in_flight -= 1
        n = self._counts[handle.name] - 1
        self._counts[handle.name] = n
        if n < self._floor:
            self._near.discard(handle.name)

    def pressed(self) -> bool:
        """Could :meth:`door` refuse anything now? O(1): the engine skips the door's look
        (route, model, rules: measured 12 µs of CPU a request at one connection, 5–12% of
        the accepted path) while no model is near its bound, the last pass was
        short and the saturation quota is not acting. Each of those is what the door's rules
        need to refuse; once one holds, the door looks at every request again. "Near" is half
        the bound: requests a cheap model holds while they wait for a shared call
        (:mod:`packserve.serve.coalesce`) are far from its bound and keep the door away."""
        if not (self.budget_s > 0 or self.max_in_flight > 0):  # (enabled, without a call)
            return False
        quota = self.quota
        if (self._near or self.clock.last_s >= quota.long_s or quota.quota < UNLIMITED
                or quota.behind):
            return True
        rounds = quota.rounds  # (quota.slow_rounds, inline: this runs for every request)
        return rounds.mean >= quota.round_s > 0 and rounds.turns >= MIN_TURNS

    def in_progress(self, name: str) -> int:
        return self._counts.get(name, 0)

    def deadline(self, headers: Mapping[bytes, bytes], now: float) -> float | None:
        """The request's deadline on ``time.monotonic()``: the setting or the header, earlier wins.

        A malformed header is ignored (it is advice from the client, not input to validate).
        """
        timeout = self.timeout_s
        raw = headers.get(TIMEOUT_HEADER)
        if raw is not None:
            try:
                asked = float(raw) / 1000.0
            except ValueError:
                asked = 0.0
            if asked > 0 and math.isfinite(asked) and (timeout == 0 or asked < timeout):
                timeout = asked
        return None if timeout <= 0 else now + timeout

    def _reject(self, name: str, reason: str) -> None:
        # the labelled child looked up once (labels() takes a lock and builds a key: ~1.5 µs,
        # a tenth of a refusal at the door)
        inc = self._reject_inc.get((name, reason))
        if inc is None:
            if self.rejected is None:
                return
            inc = self._reject_inc[(name, reason)] = self.rejected.labels(name, reason).inc
        inc()

"""How many requests the door lets through per event-loop iteration while the loop is
saturated (:class:`PollQuota`, used by :meth:`packserve.serve.admission.Admission.door`).

Why a second loop rule besides admission's pass-length budget: a client's own queue is
invisible to the server. Open-loop clients on a bounded connection pool (a load balancer,
wrk's 512 connections) send a connection's next request only once its previous one is
answered, so each connection gets at most one answer per loop iteration. At 2x a fast
model's capacity the server must answer *every* request in time — refusing the excess — or
the clients' schedules slip and their requests time out, even while every iteration stays
well within the budget (measured: iterations of ~35 ms, 30 ms budget, 512 connections at
24k req/s -> 97k timeouts in 15 s). Answering more requests a second means accepting fewer
(a refusal costs ~0.3 of a served request at the door): how many is what the server cannot
know (the offered rate, the pool size), so it is found by feedback.

The signal is saturation, read once per iteration: the loop thread's CPU time against the
wall time (or the process's, against the wall time of every CPU it may use: a batch or
inference thread on the loop's core makes the loop wait without idling) — "every CPU it may
use" capped by a container's CPU limit (:mod:`packserve.serve.cpulimit`): throttled at half a
CPU, a saturated loop shows half its wall time as CPU time. A loop that idles,
even briefly, is keeping up with its clients; one that has not idled for ``sustain_s``, in
iterations of at least ``long_s`` (a quarter of the budget), is behind them. A saturated
loop in short iterations is not: a closed-loop client of 64 connections keeps a core busy in
~5 ms iterations, and refusing it only cut goodput (measured: 6.5k vs 12.5k served a second
before ``long_s``). While it is behind, the quota shrinks (x0.8 of what the last iteration
let through), but never below ``floor`` nor a quarter of the iteration's arrivals
(``MIN_SHARE``): a closed-loop client resends at once, so refusing never lets the loop idle,
and without that share the quota sank to the floor (measured, 512 connections: 1.1k served
a second against 17.3k with admission off). After an iteration with idle time it grows back
(x1.1, +1): additive-increase/multiplicative-decrease around the mix of served and refused
requests the core can just keep up with. Until the loop saturates the quota is unlimited:
nothing changes for a server within its capacity, and short bursts are absorbed.

**Rounds.** Iteration length misses a small pool: at 2x the coalesced chapter model's
capacity on 256 connections, iterations stay at ~5 ms (a request is read in one and answered in
the next), under ``long_s``, so nothing was refused and 500k requests timed out in 15 s. What
those clients do see is the wait between their turns: the gap between two requests on one
connection (:class:`Rounds`, measured by the engine where it reads requests), ~23 ms there
against ~3 ms for a closed loop of 64 connections at capacity. A saturated loop whose rounds
exceed ``round_s`` (a sixth of the budget: 5 ms by default) among more than
:data:`MIN_TURNS` clients counts as behind even in short iterations; a saturated loop whose
rounds come in time grows its quota back (instead of holding it). Keeping up with N
connections at a rate R needs rounds under N / R, so the target is what decides the smallest
pool protected: 256 connections at 45k req/s need 5.7 ms (measured: 0 timeouts, accepted p99
45–67 ms, was 464k–504k timeouts). The price is paid by closed-loop clients that keep more
than ~96 connections busy and ignore ``Retry-After``: they are shed like an open-loop crowd
(128 connections at a 22k req/s capacity: ~14k served a second instead of 21.8k, the rest
refused), as a concurrency limiter sheds a load test above its limit.

Limits: the share caps what can be shed at ~2.3x capacity (r = 0.25); a pool so small that
keeping up needs rounds shorter than ``round_s`` is not protected (a smaller budget is).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from packserve.serve.cpulimit import usable_cpus

__all__ = ["PollQuota", "Rounds"]

#: CPU time over wall time of an iteration that counts as no idle time at all
SATURATED = 0.9
#: the quota never falls below this share of an iteration's arrivals: what caps shedding at
#: ~1/(MIN_SHARE (1 - r) + r) x capacity (~2.3x at r = 0.25)
MIN_SHARE = 0.25
#: the most requests an iteration may pass: in effect, no limit
UNLIMITED = 1 << 30
#: weight of one request's gap in :class:`Rounds`' mean (~32 requests' memory)
ROUND_WEIGHT = 1 / 32
#: rounds count as slow only among more clients than this: a pool of 64 connections (a
#: client's pool, a closed-loop benchmark) is never shed for its round, whatever a request
#: costs (measured: /predict/batch of 20 rows, 64 connections, 7.5 ms rounds, 49k refusals
#: in 9 s with the time alone)
MIN_TURNS = 96
_TURNS_CAP = 4 * MIN_TURNS


class Rounds:
    """How long a client waits between its turns, and how many other requests were served
    in that time: per request, the time since the previous request on its connection and the
    requests that arrived in between, each averaged over requests (exponentially, weight
    :data:`ROUND_WEIGHT`).

    A client that sends its next request as soon as it has an answer — a closed loop, or an
    open-loop client behind its schedule — waits a whole round of the server's connections
    between turns, and most of that wait is invisible to the server (the request sits in a
    socket buffer until the loop reads it). The engine measures it where it reads requests
    (:mod:`packserve.serve.engines.uvicorn_door`): ``count`` is every prediction read,
    :meth:`add` one request's gap and turns. One idle connection's long gap counts at most
    ``cap`` (four rounds of the target), so a keep-alive client that calls once a minute does
    not read as a queue.
    """

    __slots__ = ("cap", "count", "mean", "turns")

    def __init__(self, cap: float) -> None:
        self.cap = cap
        self.count = 0
        self.mean = 0.0
        self.turns = 0.0

    def add(self, gap: float, turns: int) -> None:
        if gap > self.cap:
            gap = self.cap
        if turns > _TURNS_CAP:
            turns = _TURNS_CAP
        self.mean += (gap - self.mean) * ROUND_WEIGHT
        self.turns += (turns - self.turns) * ROUND_WEIGHT

    def slow(self, round_s: float) -> bool:
        """Rounds longer than ``round_s`` among more than :data:`MIN_TURNS` clients."""
        return self.mean >= round_s > 0 and self.turns >= MIN_TURNS


class PollQuota:
    """Per iteration: ``admit()`` for each request the door would let through."""

    __slots__ = ("_behind_since", "_clocks", "_cpu", "_cpus", "_proc", "_scheduled", "_stale", "_wall",
                 "floor", "long_s", "passed", "quota", "refused", "round_s", "rounds", "sustain_s")

    def __init__(
        self, *, floor: int = 16, sustain_s: float = 0.03, long_s: float = 0.015,
        round_s: float = 0.0,
        clocks: tuple[Callable[[], float], Callable[[], float], Callable[[], float]] = (
            time.monotonic, time.thread_time, time.process_time),
        cpus: float | None = None,
    ) -> None:
        self._clocks = clocks  # (wall, this thread's CPU time, this process's CPU time)
        # CPUs' worth of time a second this process may use: under a container's CPU limit
        # (a CFS quota) a saturated loop shows that share of its wall time, not all of it
        self._cpus = cpus or usable_cpus()
        self.floor = floor
        self.sustain_s = sustain_s
        self.long_s = long_s
        #: a client's turn coming round slower than this (:class:`Rounds`) is behind (0: not used)
        self.round_s = round_s
        self.rounds = Rounds(4 * round_s)
        self.quota = UNLIMITED
        self.passed = 0
        self.refused = 0
        self._scheduled = False
        self._wall = 0.0
        self._cpu = 0.0
        self._proc = 0.0
        self._stale = False
        self._behind_since: float | None = None

    @property
    def behind(self) -> bool:
        """Saturated in long iterations, not yet for ``sustain_s``: the quota may act soon."""
        return self._behind_since is not None

    @property
    def slow_rounds(self) -> bool:
        """Clients wait longer than ``round_s`` between turns (:class:`Rounds`)."""
        return self.rounds.slow(self.round_s)

    def admit(self) -> bool:
        """Let one more request through in this iteration? (Counts it if so.)"""
        if not self._scheduled:  # the first request of an iteration: measure it at its end
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._tick)
        if self.passed >= self.quota:
            self.refused += 1
            return False
        self.passed += 1
        return True

    def _tick(self) -> None:
        """Runs at the start of the next iteration: since the previous tick, was the loop
        thread ever idle? (A gap without requests in between reads as idle: it was.)"""
        wall_clock, cpu_clock, proc_clock = self._clocks
        wall = wall_clock()
        took = wall - self._wall
        self._wall = wall
        self._scheduled = False
        passed, self.passed = self.passed, 0
        arrived, self.refused = passed + self.refused, 0
        slow = self.rounds.slow(self.round_s)
        if took < self.long_s and self.quota >= UNLIMITED and not slow:
            # a short iteration and no quota in force: busy or not, nothing changes. The CPU
            # clocks cost a system call each (measured: ~4 µs a request at one connection,
            # where every request is an iteration), so they are not read; the next long
            # iteration only takes them as its baseline
            self._behind_since = None
            self._stale = True
            return
        cpu, proc = cpu_clock(), proc_clock()
        if self._stale:
            self._cpu, self._proc, self._stale = cpu, proc, False
            return
        # the loop thread never idled, or every CPU the process may use was its own (a batch
        # or inference thread on the loop's core: the loop then waits without idling)
        busy = (cpu - self._cpu >= SATURATED * took * min(1.0, self._cpus)
                or proc - self._proc >= SATURATED * took * self._cpus)
        self._cpu, self._proc = cpu, proc
        if not busy or (self.round_s > 0 and not slow and took < self.long_s):
            # idle time, or busy while every client's turn comes round in time: grow
            self._behind_since = None
            if self.quota < UNLIMITED:
                grown = self.quota + self.quota // 10 + 1
                self.quota = UNLIMITED if grown > 1 << 16 else grown
            return
        if took < self.long_s and not slow:  # busy, but what waits for it waits briefly: hold
            self._behind_since = None
            return
        if self._behind_since is None:
            self._behind_since = wall
        if wall - self._behind_since >= self.sustain_s:
            # never below a share of what arrives: clients that resend at once (a closed
            # loop) never let the loop idle, and shedding them all would leave no goodput
            share = int(arrived * MIN_SHARE)
            self.quota = max(self.floor, share, int(min(self.quota, passed) * 0.8))

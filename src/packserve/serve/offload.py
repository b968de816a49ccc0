"""When may a model call run on the event loop?

A hop to a worker thread (``run_in_executor``) costs tens of microseconds on a busy 2-core
machine: more than the chapter model's whole ~8 µs ONNX Runtime call. So the rule is about
*stalls*, not dogma: a call whose estimated cost is at most ``inline_max_ms`` (default
0.25 ms) runs inline — the loop is never held longer than that — and everything else runs in
a thread. The estimate ``fixed + per_row * rows`` is measured at warm-up and then tracked
from every call (a windowed median), so a model that turns slow stops running inline after
three calls instead of freezing health checks. A model pushed off the loop comes back through
inline *probes* (:meth:`CostModel.route`): in a thread, a call's time also holds the wait for
the GIL behind the event loop, so a fast model preempted off the loop on a busy host would never
measure fast again from there.

This is the server's one inline-or-thread rule: ``ModelHandle.infer`` applies it to
unbatched calls and hands ``CostModel.inline`` to the model's batcher for its idle fast path.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable

#: a model estimated just over the bound (at most PROBE_FACTOR times it) runs one call in
#: PROBE_EVERY inline, to measure it without the thread's GIL wait
PROBE_EVERY = 64
PROBE_FACTOR = 4.0


class CostModel:
    """Estimated seconds of one ``predictor.run`` call for ``rows`` rows.

    Tracking uses the median of the last ``window`` calls (per kind: small calls estimate the
    fixed cost, larger ones the per-row cost), not an average: on a busy machine a call is
    sometimes preempted for milliseconds, and one such outlier must not push a 10 µs model off
    the loop; a model that really turned slow wins the majority within ``window // 2 + 1``
    calls.
    """

    def __init__(self, inline_max_s: float, *, window: int = 5) -> None:
        self.inline_max_s = inline_max_s
        self.fixed_s = float("inf")  # unknown until calibrated: never inline
        self.per_row_s = 0.0
        self._small: deque[float] = deque(maxlen=window)
        self._large: deque[float] = deque(maxlen=window)
        self._probes: deque[float] = deque(maxlen=window // 2 + 1)
        self._off_loop_calls = 0

    def estimate(self, rows: int) -> float:
        return self.fixed_s + self.per_row_s * rows

    def inline(self, rows: int) -> bool:
        return self.fixed_s + self.per_row_s * rows <= self.inline_max_s

    def route(self, rows: int) -> bool:
        """Run this call inline? :meth:`inline`, or else — for a small call of a model
        estimated at most ``PROBE_FACTOR`` times the bound — once every ``PROBE_EVERY`` calls,
        as a probe. The loop is then held at most that long, that rarely; a model whose probes
        are fast again (the median of ``window // 2 + 1``) returns to the loop."""
        if self.inline(rows):
            return True
        if rows > 2 or self.estimate(rows) > PROBE_FACTOR * self.inline_max_s:
            return False
        self._off_loop_calls += 1
        if self._off_loop_calls < PROBE_EVERY:
            return False
        self._off_loop_calls = 0
        return True

    def calibrate(self, timed_run: Callable[[int], float], *, big: int = 32) -> None:
        """Measure 1-row and ``big``-row calls. ``timed_run(n)`` runs n rows, returns seconds.

        A model already slower than the bound at one row is not measured further: it will
        never run inline, whatever the batch size.
        """
        one = timed_run(1)
        if one <= 10 * self.inline_max_s:  # clearly slow models: one call says enough
            one = statistics.median([one, *(timed_run(1) for _ in range(4))])
        if self.inline_max_s <= 0 or one > self.inline_max_s:
            self.fixed_s, self.per_row_s = one, 0.0
            self._small.extend([one] * (self._small.maxlen or 1))
            return
        many = statistics.median(timed_run(big) for _ in range(3))
        self.per_row_s = max(0.0, (many - one) / (big - 1))
        self.fixed_s = max(0.0, one - self.per_row_s)
        self._small.extend([self.fixed_s] * (self._small.maxlen or 1))
        self._large.extend([self.per_row_s] * (self._large.maxlen or 1))

    def observe(self, rows: int, seconds: float, *, inline: bool = False) -> None:
        """Fold one measured call into the estimate (windowed median). An ``inline`` call of
        a model estimated off the loop is a probe (:meth:`route`): a clean measurement."""
        if rows <= 2:
            sample = max(0.0, seconds - self.per_row_s * rows)
            if inline and not self.inline(rows):
                self._probe(sample)
                return
            self._small.append(sample)
            self.fixed_s = _median(self._small)
        else:
            fixed = 0.0 if self.fixed_s == float("inf") else self.fixed_s
            self._large.append(max(0.0, (seconds - fixed) / rows))
            self.per_row_s = _median(self._large)


    def _probe(self, sample: float) -> None:
        probes = self._probes
        probes.append(sample)
        if len(probes) == probes.maxlen and _median(probes) <= self.inline_max_s:
            self._small.extend([_median(probes)] * (self._small.maxlen or 1))
            self.fixed_s = _median(self._small)
            probes.clear()


def _median(values: deque[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def timer(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


__all__ = ["PROBE_EVERY", "PROBE_FACTOR", "CostModel", "timer"]

"""When is it worth holding a request back so that it can share a model call?

The batcher asks :class:`WaitPolicy` one question each time the model is free and requests
are queued: *dispatch now, or wait until when?* The answer comes from two measurements:

* the **batch cost fit** ``cost(rows) ≈ fixed + per_row * rows``, fitted online by
  exponentially weighted least squares over the batches actually run. ``fixed`` is what a
  merge saves: two requests in one call pay it once instead of twice.
* the **arrival gap**: an exponentially weighted mean of the time between submissions.

Waiting for one more request costs each of the ``k`` queued requests the time until it
arrives, about ``k * gap`` of added latency in total; merging it saves ``fixed`` seconds of
model time. So the policy waits only while ``k * max(gap, time since the last arrival)``
stays below ``fixed``, never past the oldest request's ``max_wait`` budget. Two
consequences, both by construction rather than by tuning:

* the wait added to any request is at most ``fixed`` (one call's overhead), so waiting can
  never cost more latency than the model time it can save;
* with no measured fixed cost (first batches, or a model whose cost is all per-row) or with
  slow arrivals (one client, idle server) it never waits at all: no idle penalty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["BatchCostFit", "WaitPolicy"]


@dataclass(slots=True)
class BatchCostFit:
    """Online ``cost = fixed + per_row * rows`` fit with exponential forgetting.

    It answers the *wait* question (what a merge saves) and the Retry-After estimate; the
    inline-or-thread question is :class:`packserve.serve.offload.CostModel`'s alone.

    ``alpha`` is the weight of the newest batch; older batches fade so the model follows a
    machine whose speed changes (other tenants, thermal throttling).
    """

    alpha: float = 0.05
    _w: float = 0.0
    _n: float = 0.0
    _c: float = 0.0
    _nn: float = 0.0
    _nc: float = 0.0
    fixed_s: float = 0.0
    per_row_s: float = 0.0
    samples: int = 0
    _split: bool = False

    def observe(self, rows: int, seconds: float) -> None:
        if rows <= 0 or not math.isfinite(seconds) or seconds < 0:
            return
        self.samples += 1
        if self.samples == 1:
            # A first call is cold (allocations, a thread starting): a guess, not a sample.
            self.fixed_s, self.per_row_s = 0.0, seconds / rows
            return
        keep = 1.0 - self.alpha
        self._w = keep * self._w + self.alpha
        self._n = keep * self._n + self.alpha * rows
        self._c = keep * self._c + self.alpha * seconds
        self._nn = keep * self._nn + self.alpha * rows * rows
        self._nc = keep * self._nc + self.alpha * rows * seconds
        mean_n = self._n / self._w
        mean_c = self._c / self._w
        var_n = self._nn / self._w - mean_n * mean_n
        if var_n > 0.25:
            cov = self._nc / self._w - mean_n * mean_c
            per_row = max(cov / var_n, 0.0)
            self.per_row_s = per_row
            self.fixed_s = min(max(mean_c - per_row * mean_n, 0.0), mean_c)
            self._split = True
            return
        # (Almost) one batch size seen lately: fixed and per-row cost cannot be told apart.
        # Keep the last known split, rescaled to the current cost; without one, the first
        # guess is "no fixed cost" (which never makes the batcher wait).
        predicted = self.fixed_s + self.per_row_s * mean_n
        if self._split and predicted > 0:
            scale = mean_c / predicted
            self.fixed_s *= scale
            self.per_row_s *= scale
        else:
            self.fixed_s, self.per_row_s = 0.0, mean_c / max(mean_n, 1.0)

    def estimate(self, rows: int) -> float:
        """Predicted seconds for one call on ``rows`` rows (0 before any measurement)."""
        return self.fixed_s + self.per_row_s * max(rows, 0)


@dataclass(slots=True)
class WaitPolicy:
    """Decides between *dispatch now* and *wait until t* (monotonic seconds)."""

    max_batch_size: int
    max_wait_s: float
    cost: BatchCostFit
    gap_alpha: float = 0.1
    mean_gap_s: float = math.inf
    last_arrival: float | None = None

    def arrived(self, now: float) -> None:
        if self.last_arrival is not None:
            gap = min(max(now - self.last_arrival, 0.0), 1.0)
            if math.isinf(self.mean_gap_s):
                self.mean_gap_s = gap
            else:
                self.mean_gap_s += self.gap_alpha * (gap - self.mean_gap_s)
        self.last_arrival = now

    def wait_until(self, now: float, queued: int, rows: int, oldest: float) -> float | None:
        """``None``: dispatch now. Otherwise the time at which to decide again.

        ``queued`` requests holding ``rows`` rows are waiting; the oldest arrived at
        ``oldest``. New arrivals re-ask, so the answer may come earlier than the time.
        """
        if queued <= 0 or rows >= self.max_batch_size or self.max_wait_s <= 0:
            return None
        fixed = self.cost.fixed_s
        if fixed <= 0.0 or self.last_arrival is None:
            return None
        budget_end = oldest + self.max_wait_s
        if now >= budget_end:
            return None
        # Expected time until the next arrival: the mean gap, but no less than the silence
        # already observed (a stream that stopped must not keep us waiting).
        gap = max(self.mean_gap_s, now - self.last_arrival)
        if queued * gap >= fixed:
            return None
        # Re-decide when the silence alone would make waiting a loss.
        flip = self.last_arrival + fixed / queued
        return min(budget_end, flip)

    def retry_after(self, queued_rows: int) -> float:
        """Seconds until a full queue of ``queued_rows`` rows is likely to have drained."""
        size = max(self.max_batch_size, 1)
        batches = math.ceil(max(queued_rows, 1) / size)
        return batches * self.cost.estimate(min(queued_rows, size) or 1)

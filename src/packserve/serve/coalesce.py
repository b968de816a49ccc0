"""Requests for one model that arrive in the same event-loop pass share one model call.

A small model's cost per request is mostly fixed per *call*, not per row: entering the
runtime, the metrics and the cost model. Under concurrency many requests for the same model
are ready in the same loop pass (uvicorn parses every readable connection, then runs the
requests' tasks one after the other), so the default server lets them share a call — with no
timer and no thread, unlike ``--batching``:

* a request whose model runs on the loop (a :class:`~packserve.serve.plan.FusedPlan`) joins its
  model's pending call (:meth:`PassBatch.join`) only when the previous loop pass started more
  than one request (:attr:`~packserve.serve.admission.LoopClock.last_count`): others are likely
  queued behind it. A lone request (one client, a quiet server) is computed at once, as before;
* the first to join schedules the call with ``call_soon``: it runs after every request already
  ready in this pass has joined, then each request resumes with its own rows' answer.

Measured (issue #15 notes, Session 5): the chapter model's ``/predict`` at 64 connections went
from 73 to 47 µs of server CPU per request, below the minimal server's 49; one connection
unchanged.

What it must not change, and how it does not:

* **answers**: a model is coalesced only if, at load, its rows computed together equal, bit
  for bit, the same rows computed one by one, for several batch sizes (:func:`row_stable`).
  Tree ensembles pass; a runtime that sums differently for other batch sizes fails it and
  the model is never coalesced;
* **errors**: a combined call that fails is retried request by request, so one request's
  error cannot fail the others;
* **the loop rule**: a combined call holds at most the rows the cost model allows on the loop
  (``inline``); more are split into several calls;
* **liveness**: every joined request gets a result or an exception, whatever happens inside
  the call; a request that was cancelled meanwhile is skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from packserve.runtime import Feeds

__all__ = ["PassBatch", "row_stable"]

#: labels and probability rows of a call, in row order (what a fused plan's classify returns)
Result = tuple[list[Any], list[list[float]]]
#: one request's answer bytes from its slice of the call's result
Finish = Callable[[list[Any], list[list[float]]], bytes]
_Item = tuple[Feeds, int, Finish, "asyncio.Future[bytes]"]


class PassBatch:
    """The pending shared call of one model version (one per :class:`FusedPlan`).

    ``compute(feeds) -> (labels, probabilities)`` runs, times and counts one call (the plan's
    own step); ``inline(rows)`` says whether that many rows may run on the loop."""

    __slots__ = ("_compute", "_inline", "_pending")

    def __init__(self, compute: Callable[[Feeds], Result], inline: Callable[[int], bool]) -> None:
        self._compute = compute
        self._inline = inline
        self._pending: list[_Item] = []

    def join(self, feeds: Feeds, rows: int, finish: Finish) -> asyncio.Future[bytes]:
        """This request's answer, computed in the pass's shared call."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bytes] = loop.create_future()
        pending = self._pending
        pending.append((feeds, rows, finish, fut))
        if len(pending) == 1:
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        try:
            for group in self._groups([item for item in pending if not item[3].done()]):
                self._run(group)
        except BaseException as exc:  # never leave a joined request waiting forever
            for item in pending:
                if not item[3].done():
                    item[3].set_exception(exc)
            if not isinstance(exc, Exception):
                raise

    def _groups(self, items: list[_Item]) -> list[list[_Item]]:
        """Consecutive groups whose rows together may still run on the loop."""
        groups: list[list[_Item]] = []
        current: list[_Item] = []
        rows = 0
        for item in items:
            if current and not self._inline(rows + item[1]):
                groups.append(current)
                current, rows = [], 0
            current.append(item)
            rows += item[1]
        if current:
            groups.append(current)
        return groups

    def _run(self, group: list[_Item]) -> None:
        if len(group) == 1:
            feeds = group[0][0]
        else:
            feeds = {k: np.concatenate([item[0][k] for item in group]) for k in group[0][0]}
        try:
            labels, probs = self._compute(feeds)
        except Exception as exc:
            if len(group) == 1:
                group[0][3].set_exception(exc)
                return
            for item in group:  # one request's error must not fail the others
                self._run([item])
            return
        start = 0
        for _, rows, finish, fut in group:
            stop = start + rows
            fut.set_result(finish(labels[start:stop], probs[start:stop]))
            start = stop


def row_stable(run: Callable[[Feeds], Sequence[np.ndarray]], example: Feeds) -> bool:
    """Whether ``run`` gives every row the same bits alone as in batches of several sizes.

    ``example``: valid feeds of one or more rows; float inputs are varied around them (so the
    rows differ: a fixed pattern, not ``numpy.random``, whose import alone costs a server
    ~2 MiB), other inputs repeated. ``run(feeds)`` returns the outputs compared."""
    n = 17
    feeds: Feeds = {}
    for name, arr in example.items():
        rows = np.repeat(arr[:1], n, axis=0)
        if arr.dtype.kind == "f":
            r = np.arange(n).reshape((n,) + (1,) * (rows.ndim - 1))
            j = np.arange(rows[0].size).reshape(rows.shape[1:])
            wobble = np.sin(r * 1.7 + j * 0.61 + 0.3) * 1.5  # in [-1.5, 1.5], every row its own
            rows = (rows + wobble * (np.abs(rows) + 1.0)).astype(arr.dtype)
        feeds[name] = rows
    try:
        alone = [run({k: v[i:i + 1] for k, v in feeds.items()}) for i in range(n)]
        for size in (2, 3, 8, n):
            together = run({k: v[:size] for k, v in feeds.items()})
            for out_i, out in enumerate(together):
                for i in range(size):
                    if out[i].tobytes() != alone[i][out_i][0].tobytes():
                        return False
    except Exception:  # a model that refuses varied rows or batches: never coalesced
        return False
    return True

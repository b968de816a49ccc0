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
from typing import Generic, TypeVar

import numpy as np

from packserve.runtime import Feeds, Prediction
from packserve.runtime.inputs import concat_feeds
from packserve.runtime.tensors import shape_key

__all__ = ["PassBatch", "prediction_arrays", "row_stable"]

R = TypeVar("R")  # what one call returns (a Prediction; a fused plan's labels and rows)
T = TypeVar("T")  # what a request gets back from its slice of it


class PassBatch(Generic[R]):
    """The pending shared call of one model version.

    ``compute(feeds) -> R`` runs, times and counts one call; ``cut(result, start, stop)`` is
    one request's rows of it; ``inline(rows)`` says whether that many rows may run on the
    loop. Requests merge along the batch axis only where their other axes agree (a tensor
    model with a variable axis makes one call per shape, as ``--batching`` does)."""

    __slots__ = ("_compute", "_cut", "_inline", "_pending")

    def __init__(
        self, compute: Callable[[Feeds], R], cut: Callable[[R, int, int], R],
        inline: Callable[[int], bool],
    ) -> None:
        self._compute = compute
        self._cut = cut
        self._inline = inline
        self._pending: list[_Item[R, object]] = []

    def join(self, feeds: Feeds, rows: int, finish: Callable[[R], T]) -> asyncio.Future[T]:
        """This request's ``finish(its rows of the shared call)``, once the call has run."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        pending = self._pending
        pending.append(_Item(feeds, rows, finish, fut))  # type: ignore[arg-type]
        if len(pending) == 1:
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        try:
            for group in self._groups([item for item in pending if not item.fut.done()]):
                self._run(group)
        except BaseException as exc:  # never leave a joined request waiting forever
            for item in pending:
                if not item.fut.done():
                    item.fut.set_exception(exc)
            if not isinstance(exc, Exception):
                raise

    def _groups(self, items: list[_Item[R, object]]) -> list[list[_Item[R, object]]]:
        """Groups of one shape whose rows together may still run on the loop, in order."""
        by_shape: dict[tuple[tuple[int, ...], ...], list[_Item[R, object]]] = {}
        for item in items:
            by_shape.setdefault(shape_key(item.feeds), []).append(item)
        groups: list[list[_Item[R, object]]] = []
        for same in by_shape.values():
            current: list[_Item[R, object]] = []
            rows = 0
            for item in same:
                if current and not self._inline(rows + item.rows):
                    groups.append(current)
                    current, rows = [], 0
                current.append(item)
                rows += item.rows
            groups.append(current)
        return groups

    def _run(self, group: list[_Item[R, object]]) -> None:
        try:
            result = self._compute(concat_feeds([item.feeds for item in group]))
        except Exception as exc:
            if len(group) == 1:
                group[0].fut.set_exception(exc)
                return
            for item in group:  # one request's error must not fail the others
                self._run([item])
            return
        if len(group) == 1:
            group[0].fut.set_result(group[0].finish(result))
            return
        start = 0
        for item in group:
            stop = start + item.rows
            item.fut.set_result(item.finish(self._cut(result, start, stop)))
            start = stop


class _Item(Generic[R, T]):
    __slots__ = ("feeds", "finish", "fut", "rows")

    def __init__(self, feeds: Feeds, rows: int, finish: Callable[[R], T], fut: asyncio.Future[T]) -> None:
        self.feeds, self.rows, self.finish, self.fut = feeds, rows, finish, fut


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
                    if not _same(out[i], alone[i][out_i][0]):
                        return False
    except Exception:  # a model that refuses varied rows or batches: never coalesced
        return False
    return True


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit for bit for numbers (``==`` would take -0.0 for 0.0); by value for strings."""
    if a.dtype.kind == "O" or b.dtype.kind == "O":
        return bool(a.shape == b.shape and a.tolist() == b.tolist())
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def prediction_arrays(pred: Prediction) -> list[np.ndarray]:
    """Every array of a prediction, in a fixed order (what :func:`row_stable` compares)."""
    arrays = [pred.labels, pred.probabilities, pred.values]
    for named in (pred.outputs, pred.raw):
        if named is not None:
            arrays.extend(named[k] for k in sorted(named))
    return [a for a in arrays if a is not None]

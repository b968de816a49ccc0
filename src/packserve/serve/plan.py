"""A model version's fused answer path: request object -> feeds -> run -> answer bytes.

The generic path (``ModelHandle.infer`` -> ``Predictor.run`` -> :class:`Prediction` ->
:class:`~packserve.serve.payloads.ResponseEncoder`) builds a result object, a raw-output
dict and label arrays only for the encoder to take them apart again: for a ~6 µs model call
that is a third of the request's in-process CPU (issue #15 notes, Session 4). A
:class:`FusedPlan`, compiled once per loaded version of a plain table classifier, runs the
same steps without them, from the same parts: the model's ``RequestDecoder`` (same checks,
same errors; for a batch its vectorised accept check, which declines to the precise path),
``Predictor.run_outputs`` (counted, same error mapping) for the score output only, the
compiled ``Postprocessor.classify`` and the encoder's ``classified_*``. Whatever it does not
cover — not ready, a batcher, a passed deadline, a call the cost model sends off the loop —
takes the generic path, so admission, deadlines, disconnects and probes are unchanged.
``tests/serve/test_fused_plan.py`` holds the two paths byte-identical. Requests arriving
together may share one call (:mod:`packserve.serve.coalesce`), when the handle allows it
(``busy``) and the model's rows compute identically together (the handle's ``shared``, set at
load after :func:`~packserve.serve.coalesce.row_stable`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

from packserve.bundle import Manifest
from packserve.runtime import Feeds, Predictor
from packserve.serve.coalesce import PassBatch
from packserve.serve.offload import CostModel
from packserve.serve.payloads.encoding import ResponseEncoder
from packserve.serve.payloads.validation import RequestDecoder

#: labels and probability rows of a call, in row order
Result = tuple[list[Any], list[list[float]]]


class ModelHandle(Protocol):
    """What a plan reads of its :class:`~packserve.serve.handle.ModelHandle` (which holds
    the plan: a protocol, not an import, keeps the two modules out of a cycle)."""

    @property
    def manifest(self) -> Manifest | None: ...
    @property
    def predictor(self) -> Predictor | None: ...
    @property
    def decoder(self) -> object: ...
    @property
    def encoder(self) -> ResponseEncoder | None: ...
    @property
    def images(self) -> object: ...
    @property
    def batcher(self) -> object: ...
    @property
    def cost(self) -> CostModel: ...
    @property
    def observer(self) -> Callable[[Any, int, float, bool], None] | None: ...
    @property
    def ready(self) -> bool: ...
    @property
    def busy(self) -> Callable[[], bool] | None: ...
    @property
    def shared(self) -> object: ...


class FusedPlan:
    """``plan.answer(obj, body, batch, deadline) -> bytes`` (or feeds, or a future of the
    bytes when the request joined a shared call) for one model version."""

    __slots__ = (
        "_busy", "_classify", "_decoder", "_encoder", "_finish_batch", "_finish_single", "_handle",
        "_names", "_pass", "_run",
    )

    def __init__(self, handle: ModelHandle) -> None:
        predictor, decoder, encoder = handle.predictor, handle.decoder, handle.encoder
        assert predictor is not None and isinstance(decoder, RequestDecoder) and encoder is not None
        post = predictor.postprocessor
        assert post.plain_classifier and post.probability_output is not None
        self._handle = handle
        self._decoder = decoder
        self._encoder = encoder
        self._classify = post.classify
        self._run = predictor.run_outputs
        self._names = [post.probability_output]
        self._finish_single: Callable[[Result], bytes] = lambda r: encoder.classified_single(r[0][0], r[1][0])
        self._finish_batch: Callable[[Result], bytes] = lambda r: encoder.classified_batch(*r)
        busy = handle.busy
        self._busy: Callable[[], bool] = busy if busy is not None else _never
        self._pass: PassBatch[Result] | None = None
        if busy is not None and handle.shared is not None:  # its rows passed row_stable at load
            self._pass = PassBatch(self._compute, _cut, handle.cost.inline)

    @staticmethod
    def build(handle: ModelHandle) -> FusedPlan | None:
        """The plan of a loaded table classifier whose labels come from its scores; else None."""
        predictor, manifest = handle.predictor, handle.manifest
        if (
            predictor is None or manifest is None or handle.images is not None
            or not isinstance(handle.decoder, RequestDecoder) or handle.encoder is None
            or handle.encoder.tensor or not handle.encoder.classifier
            or not predictor.postprocessor.plain_classifier
        ):
            return None
        return FusedPlan(handle)

    @property
    def coalesces(self) -> bool:
        """Whether requests arriving together may share a call (see module doc)."""
        return self._pass is not None

    def answer(
        self, obj: Any, body: bytes, batch: bool, deadline: float | None
    ) -> bytes | Feeds | asyncio.Future[bytes]:
        """The 200 body for a parsed request ``obj`` (``body``: its bytes), or, for a call it
        does not cover, the decoded feeds for the generic path (``ModelHandle.infer``). Input
        errors are raised as the generic path raises them."""
        handle = self._handle
        decoder = self._decoder
        feeds = decoder.decode_batch(obj, body) if batch else decoder.decode_single(obj)
        rows = len(next(iter(feeds.values())))
        if (
            handle.batcher is not None or handle.predictor is None or not handle.ready
            or (deadline is not None and time.monotonic() > deadline)
            or not handle.cost.inline(rows)
        ):  # everything but a plain inline call: the generic path decides (and raises)
            return feeds
        encoder = self._encoder
        if self._pass is not None and self._busy():
            return self._pass.join(
                feeds, rows, self._finish_batch if batch else self._finish_single
            )
        labels, probs = self._compute(feeds)
        if batch:
            return encoder.classified_batch(labels, probs)
        return encoder.classified_single(labels[0], probs[0])

    def _compute(self, feeds: Feeds) -> Result:
        """One timed, counted model call: labels and probability rows."""
        handle = self._handle
        rows = len(next(iter(feeds.values())))
        t0 = time.perf_counter()
        result = self._classify(self._run(feeds, self._names)[0])
        dt = time.perf_counter() - t0
        handle.cost.observe(rows, dt, inline=True)
        observer = handle.observer
        if observer is not None:
            observer(handle, rows, dt, True)
        return result


def _never() -> bool:
    return False


def _cut(result: Result, start: int, stop: int) -> Result:
    return result[0][start:stop], result[1][start:stop]


__all__ = ["FusedPlan"]

"""One version of one model: its bundle, state, predictor and codecs, and the one place
inference happens.

Every prediction — HTTP route, V2 route, batcher — goes through :meth:`ModelHandle.infer`,
and :meth:`ModelHandle.compute` is the only caller of ``predictor.run``: the batcher plugs
in by setting ``handle.batcher`` (anything with ``await submit(feeds, deadline=...)``), and
it computes merged batches through ``handle.compute`` as well. Which versions are served is
:class:`~packserve.serve.registry.ModelRegistry`'s business.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from packserve.bundle import Manifest
from packserve.errors import (
    DeadlineExceededError,
    ModelNotReadyError,
    PackserveError,
    SignatureError,
)
from packserve.runtime import Feeds, Prediction, Predictor, RuntimeOptions, feeds_rows, load
from packserve.serve.coalesce import PassBatch, prediction_arrays, row_stable
from packserve.serve.disconnect import run_watched
from packserve.serve.offload import CostModel
from packserve.serve.payloads import RequestDecoder, ResponseEncoder, TensorRequestDecoder, decoder_for
from packserve.serve.payloads.images import ImageRequestDecoder
from packserve.serve.plan import FusedPlan
from packserve.signing import TrustAnchor, verify_signature

log = logging.getLogger("packserve.serve")


class ModelState(enum.StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    UNLOADED = "unloaded"


class Submitter(Protocol):
    """What a batcher offers ``ModelHandle.infer`` (see ``serve/batching/``)."""

    max_batch_size: int
    max_queue: int
    concurrency: int

    @property
    def queue_depth(self) -> int: ...

    async def submit(self, feeds: Feeds, *, deadline: float | None = None) -> Prediction: ...


InferenceObserver = Callable[["ModelHandle", int, float, bool], None]
"""``(handle, rows, seconds, inline)`` after every computed batch (metrics)."""


@dataclass(eq=False)
class ModelHandle:
    """One version of one model: its bundle, state, predictor and codecs."""

    name: str
    version: str
    path: Path
    manifest: Manifest | None
    max_batch: int = 1000
    state: ModelState = ModelState.LOADING
    error: str | None = None
    predictor: Predictor | None = None
    in_flight: int = 0
    batcher: Submitter | None = None
    cost: CostModel = field(default_factory=lambda: CostModel(0.00025))
    executor: Executor | None = None
    observer: InferenceObserver | None = None
    decoder: RequestDecoder | TensorRequestDecoder | None = None
    encoder: ResponseEncoder | None = None
    images: ImageRequestDecoder | None = None  # image bundles (#17): encoded images in
    plan: FusedPlan | None = None  # set once loaded, for the models it covers (serve/plan.py)
    busy: Callable[[], bool] | None = None  # the registry's coalescing hint, given at load
    #: the pending shared call of inline requests (V2 and every model without a plan)
    shared: PassBatch[Prediction] | None = None
    load_seconds: float | None = None
    #: with trusted keys: the signature is verified before anything is opened (issue #20)
    trusted: tuple[TrustAnchor, ...] = ()
    signer: str | None = None  # fingerprint of the trusted key/CA that verified it
    refusal: SignatureError | None = None  # why its signature was refused

    def __post_init__(self) -> None:
        if self.manifest is not None:
            self.decoder = decoder_for(self.manifest, max_batch=self.max_batch)
            self.encoder = ResponseEncoder(self.manifest, self.version)
            if self.manifest.preprocess is not None:
                self.images = ImageRequestDecoder(
                    self.manifest, self.version, max_batch=self.max_batch
                )

    @property
    def ready(self) -> bool:
        return self.state is ModelState.READY

    def describe(self) -> dict[str, Any]:
        m = self.manifest
        out: dict[str, Any] = {"name": self.name, "version": self.version, "state": self.state.value}
        if m is not None:
            out.update(task=m.task, features=m.feature_names, framework=m.framework)
            if m.outputs.classes is not None:
                out["classes"] = m.outputs.classes
        if self.signer is not None:
            out["signed_by"] = self.signer
        if self.error is not None:
            out["error"] = self.error
        return out

    # --- loading ----------------------------------------------------------------------

    def load_sync(self, options: RuntimeOptions) -> None:
        """Verify (signature, sha256), open, warm up and time the model. Runs in a thread."""
        t0 = time.perf_counter()
        try:
            if self.trusted:
                self.signer = _verified_signer(self.path, self.trusted)
            predictor = load(self.path, options)
            predictor.warmup()
            self.cost.calibrate(_timed_runner(predictor))
        except SignatureError as exc:  # before any byte reached a runtime
            self.state, self.error, self.refusal = ModelState.FAILED, exc.message, exc
            log.error("model %s/%s refused: signature %s: %s %s", self.name, self.version, exc.reason,
                      exc.message, exc.detail_for_logs or "")
            return
        except PackserveError as exc:
            self.state, self.error = ModelState.FAILED, exc.message
            log.error("model %s/%s failed to load: %s %s", self.name, self.version, exc.message,
                      exc.detail_for_logs or "")
            return
        except Exception as exc:  # a runtime error while warming up: report, don't crash
            self.state, self.error = ModelState.FAILED, "the model failed its warm-up prediction"
            log.exception("model %s/%s failed to warm up: %r", self.name, self.version, exc)
            return
        self.predictor = predictor
        if self.busy is not None and row_stable(  # raw outputs included: the plan's too
            lambda feeds: prediction_arrays(predictor.run(feeds)), predictor.example_feeds(1)
        ):
            self.shared = PassBatch(self._run_shared, Prediction.slice, self.cost.inline)
        self.plan = FusedPlan.build(self)
        self.load_seconds = time.perf_counter() - t0
        self.state = ModelState.READY
        log.info(
            "model %s/%s ready in %.2fs (one-row call %.1f us, %s)",
            self.name, self.version, self.load_seconds, self.cost.estimate(1) * 1e6,
            "inline" if self.cost.inline(1) else "in a thread",
        )
        if self.shared is not None:
            log.info("model %s/%s: requests arriving together share calls", self.name, self.version)

    # --- inference --------------------------------------------------------------------

    async def infer(self, feeds: Feeds, *, deadline: float | None = None) -> Prediction:
        """The single entry point for predictions (routes, V2, anything else)."""
        if self.state is not ModelState.READY:
            raise ModelNotReadyError(f"model {self.name!r} version {self.version!r} is {self.state.value}")
        if deadline is not None and time.monotonic() > deadline:
            raise DeadlineExceededError("the request's deadline passed before it was computed")
        self.in_flight += 1
        try:
            if self.batcher is not None:
                return await self.batcher.submit(feeds, deadline=deadline)
            return await self.compute(feeds, deadline=deadline)
        finally:
            self.in_flight -= 1

    async def compute(self, feeds: Feeds, *, deadline: float | None = None) -> Prediction:
        """Run ``predictor.run`` inline if measured cheap, else in the inference executor,
        where a request still waiting for a thread when its ``deadline`` passes or its
        client disconnects (:func:`~packserve.serve.disconnect.run_watched`) is dropped."""
        rows = feeds_rows(feeds)
        if self.cost.route(rows):
            shared, busy = self.shared, self.busy
            if shared is not None and busy is not None and busy() and self.cost.inline(rows):
                return await shared.join(feeds, rows, _whole)  # serve/coalesce.py
            return self._run(feeds, rows, True)
        if deadline is None:
            return await run_watched(self.executor, self._run, feeds, rows, False)
        return await run_watched(self.executor, self._run_before, feeds, rows, deadline)

    def _run_shared(self, feeds: Feeds) -> Prediction:
        return self._run(feeds, feeds_rows(feeds), True)

    def _run_before(self, feeds: Feeds, rows: int, deadline: float) -> Prediction:
        if time.monotonic() > deadline:
            raise DeadlineExceededError("the request's deadline passed before it was computed")
        return self._run(feeds, rows, False)

    def _run(self, feeds: Feeds, rows: int, inline: bool) -> Prediction:
        predictor = self.predictor
        if predictor is None:
            raise ModelNotReadyError(f"model {self.name!r} version {self.version!r} is not loaded")
        t0 = time.perf_counter()
        pred = predictor.run(feeds)
        dt = time.perf_counter() - t0
        self.cost.observe(rows, dt, inline=inline)
        if self.observer is not None:
            self.observer(self, rows, dt, inline)
        return pred

    def close(self) -> None:
        if self.predictor is not None:
            self.predictor.close()
            self.predictor = None
        self.plan = self.shared = None  # they hold the predictor's methods
        self.state = ModelState.UNLOADED


def _verified_signer(path: Path, trusted: tuple[TrustAnchor, ...]) -> str | None:
    anchor = verify_signature(path, trusted).verified_by
    return anchor.fingerprint if anchor is not None else None


def _whole(pred: Prediction) -> Prediction:
    return pred


def _timed_runner(predictor: Predictor) -> Callable[[int], float]:
    def run(n: int) -> float:
        feeds = predictor.example_feeds(n)
        t0 = time.perf_counter()
        predictor.run(feeds)
        return time.perf_counter() - t0

    return run


__all__ = ["InferenceObserver", "ModelHandle", "ModelState", "Submitter"]

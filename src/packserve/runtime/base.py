"""The Predictor contract shared by every artifact format.

``to_feeds`` validates and converts rows (cheap, may run on the event loop); ``run``
computes (the expensive part a server moves off the loop or batches). Splitting the two
is what lets a batcher validate each request on its own and merge only valid feeds.
"""

from __future__ import annotations

import abc
import threading
from typing import Any

import numpy as np

from packserve.bundle import Manifest
from packserve.errors import InferenceError
from packserve.runtime.inputs import Feeds, rows_to_feeds
from packserve.runtime.postprocess import Postprocessor, postprocess
from packserve.runtime.prediction import Prediction
from packserve.runtime.tensors import TensorInputs, example_feeds


class Predictor(abc.ABC):
    """A loaded, verified bundle that turns rows into :class:`Prediction` objects."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self._lock = threading.Lock()
        self.calls = 0  # model invocations; lets tests and metrics count batches
        self._postprocess = Postprocessor(manifest)
        self._tensor_inputs = TensorInputs(manifest) if manifest.is_tensor else None

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    def to_feeds(self, rows: Any) -> Feeds:
        """Validate and convert user input into the artifact's feeds.

        Table bundles take rows (see :func:`packserve.runtime.inputs.rows_to_feeds`). Tensor
        bundles take named N-D arrays, batch axis first: a mapping ``{input name: array}``,
        a tuple in input order, a list of per-instance mappings, or (one input) the array.
        """
        if self._tensor_inputs is not None:
            return self._tensor_inputs(rows)
        return rows_to_feeds(rows, self.manifest)

    def predict(self, rows: Any) -> Prediction:
        return self.run(self.to_feeds(rows))

    def predict_images(self, images: Any) -> Prediction:
        """Image bundles: encoded images (bytes) or Pillow images, one or a list, through the
        manifest's preprocessing (:mod:`packserve.runtime.images`) and the model."""
        from packserve.runtime.images import ImagePipeline

        items = images if isinstance(images, list | tuple) else [images]
        return self.run(ImagePipeline(self.manifest).feeds(items))

    def example_feeds(self, batch: int = 1) -> Feeds:
        """Valid feeds of ``batch`` instances (warm-up and timing)."""
        m = self.manifest
        if m.is_tensor:
            return example_feeds(m, batch)
        row = m.examples[0] if m.examples else ["" if f.dtype == "string" else 0.0 for f in m.features]
        return self.to_feeds([row] * batch)

    def run(self, feeds: Feeds) -> Prediction:
        """Compute on validated feeds. Runtime failures become :class:`InferenceError`."""
        with self._lock:
            self.calls += 1
        try:
            raw = self._run_raw(feeds)
        except InferenceError:
            raise
        except Exception as exc:  # the runtime's own errors carry paths and internals
            raise InferenceError(
                "the model failed to compute this batch", detail_for_logs=repr(exc)
            ) from exc
        return self._postprocess(raw)

    @property
    def postprocessor(self) -> Postprocessor:
        """The compiled :class:`Postprocessor` ``run`` applies (a server's fused plan uses it)."""
        return self._postprocess

    def run_outputs(self, feeds: Feeds, names: list[str]) -> list[np.ndarray]:
        """Like :meth:`run` (counted, same errors), but only the raw outputs ``names``, not
        postprocessed: for a caller that postprocesses them itself (the server's fused plan)."""
        with self._lock:
            self.calls += 1
        try:
            return self._run_outputs(feeds, names)
        except InferenceError:
            raise
        except Exception as exc:  # the runtime's own errors carry paths and internals
            raise InferenceError(
                "the model failed to compute this batch", detail_for_logs=repr(exc)
            ) from exc

    @abc.abstractmethod
    def _run_raw(self, feeds: Feeds) -> dict[str, np.ndarray]:
        """Run the artifact; return every raw output by name."""

    def _run_outputs(self, feeds: Feeds, names: list[str]) -> list[np.ndarray]:
        """Run the artifact for the outputs ``names`` (a runtime that can compute fewer
        outputs overrides this)."""
        raw = self._run_raw(feeds)
        return [raw[n] for n in names]

    def warmup(self) -> Prediction:
        """One real prediction (on the bundle's example rows, else zeros) before readiness."""
        m = self.manifest
        if m.is_tensor:
            return self.run(example_feeds(m, 1))
        if m.examples:
            return self.predict(m.examples[:1])
        row = ["" if f.dtype == "string" else 0.0 for f in m.features]
        return self.predict([row])

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release runtime resources."""


__all__ = ["Predictor", "postprocess"]

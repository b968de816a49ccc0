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
from packserve.runtime.prediction import Prediction


class Predictor(abc.ABC):
    """A loaded, verified bundle that turns rows into :class:`Prediction` objects."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self._lock = threading.Lock()
        self.calls = 0  # model invocations; lets tests and metrics count batches

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    def to_feeds(self, rows: Any) -> Feeds:
        return rows_to_feeds(rows, self.manifest)

    def predict(self, rows: Any) -> Prediction:
        return self.run(self.to_feeds(rows))

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
        return postprocess(raw, self.manifest)

    @abc.abstractmethod
    def _run_raw(self, feeds: Feeds) -> dict[str, np.ndarray]:
        """Run the artifact; return every raw output by name."""

    def warmup(self) -> Prediction:
        """One real prediction (on the bundle's example rows, else zeros) before readiness."""
        m = self.manifest
        if m.examples:
            return self.predict(m.examples[:1])
        row = ["" if f.dtype == "string" else 0.0 for f in m.features]
        return self.predict([row])

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release runtime resources."""


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-x))
    return out


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def postprocess(raw: dict[str, np.ndarray], manifest: Manifest) -> Prediction:
    """Map raw artifact outputs to a :class:`Prediction` per the manifest's OutputSpec."""
    spec = manifest.outputs
    if spec.task == "regression":
        assert spec.value_output is not None
        values = np.asarray(raw[spec.value_output])
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        return Prediction(values=values)

    assert spec.probability_output is not None and spec.classes is not None
    p = np.asarray(raw[spec.probability_output], dtype=np.float64)
    if spec.postprocess in ("sigmoid_logit", "sigmoid_probability"):
        p = p.reshape(-1)
        if spec.postprocess == "sigmoid_logit":
            p = _sigmoid(p)
        probs = np.stack([1.0 - p, p], axis=1)
    elif spec.postprocess == "softmax":
        probs = _softmax(p)
    else:
        probs = p
    classes = spec.classes
    if spec.label_output is not None and spec.label_output in raw:
        labels = np.asarray(raw[spec.label_output]).reshape(-1)
        if isinstance(classes[0], str):
            labels = labels.astype(str)
    elif spec.postprocess.startswith("sigmoid"):
        labels = np.asarray(classes)[(probs[:, 1] >= spec.threshold).astype(np.int64)]
    else:
        labels = np.asarray(classes)[_argmax_first_of_ties(probs)]
    return Prediction(labels=labels, probabilities=probs, classes=list(classes))


TIE_EPS = 1e-6


def _argmax_first_of_ties(probs: np.ndarray) -> np.ndarray:
    """Argmax where classes within float32 noise of the best count as tied -> first wins.

    The native model (scikit-learn, XGBoost) averages in float64 and breaks exact ties (a
    20-tree forest voting 10:10) towards the first class; a float32 graph summing the same
    trees in another order lands 1 ulp either side of 0.5, so a plain argmax would flip.
    """
    if probs.ndim == 2 and probs.shape[1] == 2:
        # Same answer in one pass (the hot path of every binary request): class 0 is within
        # TIE_EPS of the best exactly when p0 >= p1 - TIE_EPS; NaN compares False -> 0, as above.
        pair: np.ndarray = (probs[:, 0] < probs[:, 1] - TIE_EPS).astype(np.intp)
        return pair
    best = probs.max(axis=1, keepdims=True)
    out: np.ndarray = (probs >= best - TIE_EPS).argmax(axis=1)
    return out

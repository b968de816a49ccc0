"""Raw artifact outputs -> :class:`Prediction`, as the manifest's ``OutputSpec`` says.

:class:`Postprocessor` is compiled once per loaded model: the branch to take, the output
names and the classes array are decided at load time, so the per-call work is the numpy it
cannot avoid. That matters on a server: for a ~5 µs tree-ensemble call, re-reading the
pydantic spec and rebuilding the classes array on every request cost as much as the model.
"""

from __future__ import annotations

import numpy as np

from packserve.bundle import NAMED_OUTPUT_TASKS, Label, Manifest
from packserve.runtime.prediction import Prediction

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


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-x))
    return out


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


class Postprocessor:
    """``Postprocessor(manifest)(raw) -> Prediction``; see the module docstring."""

    def __init__(self, manifest: Manifest) -> None:
        spec = manifest.outputs
        self.tensor = spec.task in NAMED_OUTPUT_TASKS
        self.tensor_names = [t.name for t in spec.tensors]
        self.regression = spec.task == "regression"
        self.value_output = spec.value_output
        self.probability_output = spec.probability_output
        self.mode = spec.postprocess
        self.threshold = spec.threshold
        self.label_output = spec.label_output
        if self.regression or self.tensor:
            assert self.tensor or spec.value_output is not None
            self.classes: list[Label] = []
            self.classes_array = np.empty(0)
            self.string_labels = False
            self.binary_argmax = False
            self.class_values: list[Label] = []
            return
        assert spec.probability_output is not None and spec.classes is not None
        self.classes = list(spec.classes)
        self.classes_array = np.asarray(self.classes)
        #: what ``labels.tolist()`` gives for each class (the answer's label values)
        self.class_values = list(self.classes_array.tolist())
        self.string_labels = isinstance(self.classes[0], str)
        self.binary_argmax = self.mode == "probabilities" and len(self.classes) == 2

    def __call__(self, raw: dict[str, np.ndarray]) -> Prediction:
        if self.tensor:
            return Prediction(outputs={n: np.asarray(raw[n]) for n in self.tensor_names})
        if self.regression:
            values = np.asarray(raw[self.value_output])  # type: ignore[index]
            if values.ndim == 2 and values.shape[1] == 1:
                values = values[:, 0]
            return Prediction(values=values)
        scores = raw[self.probability_output]  # type: ignore[index]
        p = np.asarray(scores, dtype=np.float64)
        if self.binary_argmax and p.shape == (1, 2) and self.label_output not in raw:
            # one row of a binary classifier (most requests): two Python floats (_binary_row)
            i = _binary_row(p)[0]
            return Prediction(labels=self.classes_array[i:i + 1], probabilities=p,
                              classes=self.classes,
                              raw={self.probability_output: np.asarray(scores)})  # type: ignore[dict-item]
        probs = self._probabilities(p)
        if self.label_output is not None and self.label_output in raw:
            labels = np.asarray(raw[self.label_output]).reshape(-1)
            if self.string_labels:
                labels = labels.astype(str)
        else:
            labels = self.classes_array[self._label_index(probs)]
        return Prediction(labels=labels, probabilities=probs, classes=self.classes,
                          raw={self.probability_output: np.asarray(scores)})  # type: ignore[dict-item]

    @property
    def plain_classifier(self) -> bool:
        """A classifier whose labels come from its scores alone (no label output read):
        what :meth:`classify` serves."""
        return not (self.tensor or self.regression) and self.label_output is None

    def classify(self, scores: np.ndarray) -> tuple[list[Label], list[list[float]]]:
        """Labels and probability rows as plain Python values, from the score output alone
        (``plain_classifier`` only): what ``__call__`` decides, without the ``Prediction``
        (a server's fused plan encodes these straight away)."""
        if self.binary_argmax and scores.ndim == 2 and scores.shape[1] == 2 and scores.dtype.kind == "f":
            # a binary classifier's rows (most requests): the first-of-ties argmax of
            # _argmax_first_of_ties on Python floats (float64 holds every float16/32 value
            # exactly: the same floats as the float64 array); NaN compares False -> class 0
            rows: list[list[float]] = scores.tolist()
            c0, c1 = self.class_values
            return [c1 if r0 < r1 - TIE_EPS else c0 for r0, r1 in rows], rows
        p = np.asarray(scores, dtype=np.float64)
        probs = self._probabilities(p)
        labels: list[Label] = self.classes_array[self._label_index(probs)].tolist()
        return labels, probs.tolist()

    def _probabilities(self, p: np.ndarray) -> np.ndarray:
        mode = self.mode
        if mode in ("sigmoid_logit", "sigmoid_probability"):
            p = p.reshape(-1)
            if mode == "sigmoid_logit":
                p = _sigmoid(p)
            return np.stack([1.0 - p, p], axis=1)
        if mode == "softmax":
            return _softmax(p)
        return p  # "probabilities" (and anything else): as the model gave them

    def _label_index(self, probs: np.ndarray) -> np.ndarray:
        if self.mode.startswith("sigmoid"):
            return (probs[:, 1] >= self.threshold).astype(np.int64)
        return _argmax_first_of_ties(probs)


def _binary_row(p: np.ndarray) -> tuple[int, list[float]]:
    """The first-of-ties argmax of one ``(1, 2)`` row on two Python floats instead of five
    numpy calls (NaN -> class 0, as :func:`_argmax_first_of_ties`), and the row itself."""
    row: list[float] = p.tolist()[0]
    return (1 if row[0] < row[1] - TIE_EPS else 0), row


def postprocess(raw: dict[str, np.ndarray], manifest: Manifest) -> Prediction:
    """One-off form of :class:`Postprocessor` (pack-time checks; predictors keep theirs)."""
    return Postprocessor(manifest)(raw)


__all__ = ["TIE_EPS", "Postprocessor", "postprocess"]

"""Prediction -> response JSON bytes, straight to orjson (no response-model objects).

Shapes (the OpenAPI schemas in :mod:`packserve.serve.openapi.schemas` describe exactly these):
classification ``{"prediction", "probability", "probabilities", "model_version"}``,
regression ``{"prediction", "model_version"}``, ``task='tensor'`` ``{"outputs": {name: nested
array}, "model_version"}``, batch ``{"predictions", "batch_size", "model_version"}`` with one
such item per instance. Labels keep their type: ints stay ints, strings stay strings.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from packserve.bundle import NAMED_OUTPUT_TASKS, Manifest
from packserve.runtime.prediction import Prediction


class ResponseEncoder:
    """Compiled once per model version."""

    def __init__(self, manifest: Manifest, version: str) -> None:
        self.version = version
        self.tensor = manifest.task in NAMED_OUTPUT_TASKS
        self.classifier = manifest.is_classifier
        classes = list(manifest.outputs.classes or [])
        self.keys = [str(c) for c in classes]
        self.index = {c: i for i, c in enumerate(classes)}
        self._classes = np.asarray(classes) if classes else None

    def _label_probability(self, pred: Prediction) -> tuple[list[Any], list[float], list[list[float]]]:
        assert pred.labels is not None and pred.probabilities is not None
        labels = pred.labels
        probs = pred.probabilities
        if self._classes is not None and labels.shape[0]:
            hit = labels[:, None] == self._classes[None, :]
            idx = hit.argmax(axis=1)
            chosen = probs[np.arange(len(idx)), idx]
            # A label outside the manifest classes (should not happen): report the top probability.
            missing = ~hit.any(axis=1)
            if missing.any():
                chosen = np.where(missing, probs.max(axis=1), chosen)
        else:  # pragma: no cover - classifiers always list classes
            chosen = probs.max(axis=1)
        return labels.tolist(), chosen.tolist(), probs.tolist()

    def _tensor_items(self, pred: Prediction) -> list[dict[str, Any]]:
        assert pred.outputs is not None
        named = {k: v.tolist() for k, v in pred.outputs.items()}  # one C pass per output
        return [{"outputs": {k: v[i] for k, v in named.items()}} for i in range(len(pred))]

    def single(self, pred: Prediction) -> bytes:
        if self.tensor:
            assert pred.outputs is not None
            outs = {k: v[0].tolist() for k, v in pred.outputs.items()}
            return orjson.dumps({"outputs": outs, "model_version": self.version})
        if self.classifier:
            assert pred.labels is not None and pred.probabilities is not None
            return self.classified_single(pred.labels[0].item(), pred.probabilities[0].tolist())
        assert pred.values is not None
        return orjson.dumps({"prediction": pred.values[0].tolist(), "model_version": self.version})

    def batch(self, pred: Prediction) -> bytes:
        predictions: list[dict[str, Any]]
        if self.tensor:
            predictions = self._tensor_items(pred)
        elif self.classifier:
            assert pred.labels is not None and pred.probabilities is not None
            if len(pred.labels) > 64:  # large batches: vectorised label -> probability
                labels, chosen, rows = self._label_probability(pred)
                keys = self.keys
                predictions = [
                    {"prediction": label, "probability": p,
                     "probabilities": dict(zip(keys, row, strict=True))}
                    for label, p, row in zip(labels, chosen, rows, strict=True)
                ]
            else:  # small batches: plain dict lookups beat numpy's per-call overhead
                return self.classified_batch(pred.labels.tolist(), pred.probabilities.tolist())
        else:
            assert pred.values is not None
            predictions = [{"prediction": v} for v in pred.values.tolist()]
        return orjson.dumps(
            {"predictions": predictions, "batch_size": len(predictions), "model_version": self.version}
        )

    def classified_single(self, label: Any, row: list[float]) -> bytes:
        """One classified row (its label and probabilities as Python values) -> the answer."""
        i = self.index.get(label)
        return orjson.dumps(
            {
                "prediction": label,
                "probability": row[i] if i is not None else max(row),
                "probabilities": dict(zip(self.keys, row, strict=True)),
                "model_version": self.version,
            }
        )

    def classified_batch(self, labels: list[Any], rows: list[list[float]]) -> bytes:
        """Classified rows (labels and probability rows as Python values) -> the batch answer."""
        predictions = self._small_batch(labels, rows)
        return orjson.dumps(
            {"predictions": predictions, "batch_size": len(predictions), "model_version": self.version}
        )

    def _small_batch(self, labels: list[Any], rows: list[list[float]]) -> list[dict[str, Any]]:
        index, keys = self.index, self.keys
        if len(keys) == 2:
            k0, k1 = keys
            return [
                {
                    "prediction": label,
                    "probability": row[index[label]] if label in index else max(row),
                    "probabilities": {k0: row[0], k1: row[1]},
                }
                for label, row in zip(labels, rows, strict=True)
            ]
        return [
            {
                "prediction": label,
                "probability": row[index[label]] if label in index else max(row),
                "probabilities": dict(zip(keys, row, strict=True)),
            }
            for label, row in zip(labels, rows, strict=True)
        ]


__all__ = ["ResponseEncoder"]

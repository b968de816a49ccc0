"""The result of a prediction: one object shape for every framework and format."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from packserve.bundle import Label


@dataclass(frozen=True, slots=True)
class Prediction:
    """Predictions for ``n`` rows.

    Classification fills ``labels`` (original label space: ints stay ints, strings stay
    strings), ``probabilities`` ``(n, k)`` and ``classes`` (labels in column order).
    Regression fills ``values`` ``(n,)`` (or ``(n, m)`` for multi-output models).
    ``task='tensor'`` fills ``outputs``: every raw output by name, batch axis first.
    A classifier also keeps ``raw``: the artifact's score output (logits or probabilities,
    before postprocessing) by name, for clients that ask for it (image bundles' ``?raw=true``).
    """

    labels: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    classes: list[Label] | None = None
    values: np.ndarray | None = None
    outputs: dict[str, np.ndarray] | None = None
    raw: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        for arr in (self.labels, self.values, self.probabilities):
            if arr is not None:
                return int(arr.shape[0])
        if self.outputs:
            return int(next(iter(self.outputs.values())).shape[0])
        return 0

    def slice(self, start: int, stop: int) -> Prediction:
        """Rows ``start:stop`` — how a batcher hands each caller its own rows back."""

        def cut(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[start:stop]

        return Prediction(
            labels=cut(self.labels),
            probabilities=cut(self.probabilities),
            classes=self.classes,
            values=cut(self.values),
            outputs=None if self.outputs is None
            else {k: v[start:stop] for k, v in self.outputs.items()},
            raw=None if self.raw is None else {k: v[start:stop] for k, v in self.raw.items()},
        )

    def to_records(self) -> list[dict[str, Any]]:
        """Plain-Python dicts per row (JSON-ready), the shape ``/predict`` returns."""
        out: list[dict[str, Any]] = []
        if self.outputs is not None:
            named = {k: v.tolist() for k, v in self.outputs.items()}
            return [{"outputs": {k: v[i] for k, v in named.items()}} for i in range(len(self))]
        if self.values is not None:
            for v in self.values.tolist():
                out.append({"prediction": v})
            return out
        assert self.labels is not None and self.probabilities is not None and self.classes is not None
        index = {c: i for i, c in enumerate(self.classes)}
        probs = self.probabilities.tolist()
        for label, row in zip(self.labels.tolist(), probs, strict=True):
            i = index.get(label)
            out.append(
                {
                    "prediction": label,
                    "probability": row[i] if i is not None else max(row),
                    "probabilities": {str(c): p for c, p in zip(self.classes, row, strict=True)},
                }
            )
        return out

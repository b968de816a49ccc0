"""The one-row binary fast path of :class:`Postprocessor` answers exactly as the vectorised path.

Most requests are one row of a binary classifier, so ``Postprocessor`` decides that label on two
Python floats instead of numpy calls; a batch of rows still goes through
``_argmax_first_of_ties``. Each row here is postprocessed alone (fast path) and inside a
two-row batch (vectorised path): labels, probabilities and dtypes must agree, ties within
``TIE_EPS`` and NaN included.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from packserve.bundle import OutputSpec
from packserve.runtime.postprocess import TIE_EPS, Postprocessor


def _postprocessor(classes: list[Any], label_output: str | None = None) -> Postprocessor:
    spec = OutputSpec(task="binary", postprocess="probabilities", probability_output="probs",
                      label_output=label_output, classes=classes)
    return Postprocessor(SimpleNamespace(outputs=spec))  # type: ignore[arg-type]


ROWS = [
    (0.3, 0.7), (0.7, 0.3), (0.5, 0.5), (0.5, 0.5 + TIE_EPS / 2), (0.5, 0.5 + 4 * TIE_EPS),
    (0.49999997, 0.50000003), (float("nan"), 0.3), (0.3, float("nan")), (0.0, 1.0), (1.0, 0.0),
]


@pytest.mark.parametrize("classes", [[0, 1], ["no", "yes"], [3, 7]])
@pytest.mark.parametrize("row", ROWS)
def test_one_row_matches_the_batch_path(classes: list[Any], row: tuple[float, float]) -> None:
    post = _postprocessor(classes)
    one = post({"probs": np.array([row], dtype=np.float32)})
    pair = post({"probs": np.array([row, (0.1, 0.9)], dtype=np.float32)})
    assert one.labels is not None and pair.labels is not None
    assert one.probabilities is not None and pair.probabilities is not None
    assert one.labels.tolist() == pair.labels[:1].tolist()
    assert one.labels.dtype == pair.labels.dtype
    np.testing.assert_array_equal(one.probabilities, pair.probabilities[:1])
    assert one.probabilities.dtype == np.float64
    assert one.raw is not None and one.raw["probs"].shape == (1, 2)


def test_a_label_output_still_wins_over_the_argmax() -> None:
    post = _postprocessor([0, 1], label_output="label")
    pred = post({"probs": np.array([[0.9, 0.1]], dtype=np.float32), "label": np.array([1])})
    assert pred.labels is not None and pred.labels.tolist() == [1]

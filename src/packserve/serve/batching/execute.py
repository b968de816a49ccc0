"""The compute side of a batch: merge feeds, run the model, split the prediction.

Runs in the batcher's executor thread (or on the loop for an inline batch). Every failure
becomes one :class:`InferenceError` for the whole batch, without internals in its message.

Requests merge along the batch axis only where their other axes agree: a tensor model with
a variable axis (a sequence length) runs one model call per distinct shape in the batch
(requests of one shape still share a call), never pads.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from packserve.errors import InferenceError, PackserveError
from packserve.runtime.inputs import Feeds, concat_feeds
from packserve.runtime.prediction import Prediction
from packserve.runtime.tensors import shape_key

__all__ = ["Outcome", "compute", "fresh_error"]


@dataclass(slots=True)
class Outcome:
    results: list[Prediction] = field(default_factory=list)
    error: PackserveError | None = None
    compute_s: float = 0.0


def compute(
    run: Callable[[Feeds], Prediction], parts: Sequence[Feeds], sizes: Sequence[int]
) -> Outcome:
    """Merge, run, split: ``results[i]`` holds exactly the rows of ``parts[i]``, in order."""
    t0 = time.perf_counter()
    try:
        if len(parts) == 1:
            results = [_checked(run(parts[0]), sizes[0])]
        else:
            groups: dict[tuple[tuple[int, ...], ...], list[int]] = {}
            for i, p in enumerate(parts):
                groups.setdefault(shape_key(p), []).append(i)
            slots: list[Prediction | None] = [None] * len(parts)
            for members in groups.values():
                merged = concat_feeds([parts[i] for i in members])
                pred = _checked(run(merged), sum(sizes[i] for i in members))
                start = 0
                for i in members:
                    slots[i] = pred.slice(start, start + sizes[i])
                    start += sizes[i]
            results = [r for r in slots if r is not None]
    except PackserveError as exc:
        return Outcome(error=exc, compute_s=time.perf_counter() - t0)
    except Exception as exc:
        err = InferenceError("the model failed to compute this batch", detail_for_logs=repr(exc))
        return Outcome(error=err, compute_s=time.perf_counter() - t0)
    return Outcome(results=results, compute_s=time.perf_counter() - t0)


def _checked(pred: Prediction, total: int) -> Prediction:
    if len(pred) != total:
        raise InferenceError(
            "the model returned a wrong number of rows",
            detail_for_logs=f"expected {total}, got {len(pred)}",
        )
    return pred


def fresh_error(exc: PackserveError) -> PackserveError:
    """A new exception object per caller: one instance raised in many tasks would collect
    every task's traceback."""
    try:
        return copy.copy(exc)
    except Exception:
        return InferenceError(exc.message, detail_for_logs=exc.detail_for_logs)

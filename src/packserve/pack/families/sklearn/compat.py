"""Workarounds for converter bugs in the installed stack, each scoped and recorded.

Every workaround is a context manager active only while one conversion runs, so the
converters behave exactly as shipped everywhere else; the packer writes the names of the
workarounds it used into the manifest (``export.workarounds``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_lock = threading.Lock()

HIST_GB_BOOL_ATTRIBUTE = "skl2onnx-hist-gb-missing-tracks-bool"


def _int_missing_tracks(add_node: Callable[..., Any]) -> Callable[..., Any]:
    def patched(*args: Any, **kwargs: Any) -> Any:
        if "nodes_missing_value_tracks_true" in kwargs:
            kwargs["nodes_missing_value_tracks_true"] = int(kwargs["nodes_missing_value_tracks_true"])
        return add_node(*args, **kwargs)

    return patched


@contextmanager
def hist_gradient_boosting_fix() -> Iterator[str]:
    """Let skl2onnx convert HistGradientBoosting* under protobuf >= 7.

    skl2onnx's ``add_tree_to_attribute_pairs_hist_gradient_boosting`` passes a Python
    ``False`` as ``nodes_missing_value_tracks_true`` for every leaf. protobuf 7 rejects a
    bool in a repeated int field ("Expected an int, got a boolean"), so the conversion
    fails in ``onnx.helper.make_attribute``. The fix turns that one argument into ``int``
    (the value ONNX defines for the attribute) while the conversion runs; branch nodes'
    learned NaN routing (``missing_go_to_left``, a numpy integer) is kept unchanged.
    """
    from skl2onnx.common import tree_ensemble

    with _lock:
        original = tree_ensemble.add_node
        tree_ensemble.add_node = _int_missing_tracks(original)
        try:
            yield HIST_GB_BOOL_ATTRIBUTE
        finally:
            tree_ensemble.add_node = original


def _hist_gradient_boosting_parts(model: Any) -> list[Any]:
    """Every HistGradientBoosting* in ``model`` (itself, Pipeline/ColumnTransformer steps)."""
    found: list[Any] = []
    seen: list[Any] = [model]
    while seen:
        m = seen.pop()
        if type(m).__name__.startswith("HistGradientBoosting"):
            found.append(m)
        for attr in ("steps", "transformers_"):
            for item in getattr(m, attr, None) or []:
                seen.append(item[1])
        inner = getattr(m, "estimator", None)
        if inner is not None:
            seen.append(inner)
    return found


def contains_hist_gradient_boosting(model: Any) -> bool:
    return bool(_hist_gradient_boosting_parts(model))


def native_categorical_hist_gradient_boosting(model: Any) -> bool:
    """skl2onnx has no categorical-split support: such a model converts to a graph ONNX
    Runtime refuses to load (checked with skl2onnx 1.20), so it is refused up front."""
    for m in _hist_gradient_boosting_parts(model):
        mask = getattr(m, "is_categorical_", None)
        if mask is not None and bool(mask.any()):
            return True
    return False


__all__ = [
    "HIST_GB_BOOL_ATTRIBUTE",
    "contains_hist_gradient_boosting",
    "hist_gradient_boosting_fix",
    "native_categorical_hist_gradient_boosting",
]

"""A user's own ONNX file as a model ``pack`` takes (issue #16: bring your own ONNX).

``packserve.pack("model.onnx", OUT, sample=...)`` (or ``packserve pack model.onnx OUT
--sample sample.npz [--expected outputs.npz]``) wraps the path in :class:`OnnxModel`, which
the ``onnx`` family (:mod:`packserve.pack.families.onnx`) packs. Nothing is imported here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class OnnxModel:
    """An ONNX file on disk (with any external-data files beside it)."""

    path: Path
    # filled by the family's check(): the parsed graph and what it says
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, model: Any) -> OnnxModel | None:
        """``model`` as an ONNX file when it is a path ending in ``.onnx``, else ``None``."""
        if isinstance(model, OnnxModel):
            return model
        if isinstance(model, str | os.PathLike) and str(model).lower().endswith(".onnx"):
            return cls(Path(model))
        return None


def load_arrays(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Named arrays from an ``.npz`` (never unpickles object arrays) or one ``.npy``."""
    import numpy as np

    p = Path(path)
    with open(p, "rb") as fh:
        if p.suffix.lower() == ".npy":
            return {"": np.load(fh, allow_pickle=False)}
        with np.load(fh, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}


__all__ = ["OnnxModel", "load_arrays"]

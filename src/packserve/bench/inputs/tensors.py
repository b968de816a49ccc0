"""Request inputs for tensor models (issue #16): N-D arrays and integer ids from the signature.

Each input has a concrete instance shape (variable axes at the length the pack sample had,
or 1 when only a server's V2 metadata is known) and, for integers, the range the model
accepts (token ids below the vocabulary size), so every generated request is valid. Floats
are standard normal rounded to 4 decimals (shorter JSON, same parse work per element).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

_V2 = {"FP32": "float32", "FP64": "float64", "FP16": "float16", "INT64": "int64",
       "INT32": "int32", "UINT8": "uint8", "BOOL": "bool"}


@dataclass(frozen=True)
class TensorInput:
    name: str
    dtype: str
    shape: tuple[int, ...]  # one instance (no batch axis)
    low: int = 0
    high: int = 10  # inclusive

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape),
                "low": self.low, "high": self.high}


def from_manifest(manifest: Any) -> list[TensorInput]:
    out = []
    for spec in manifest.inputs:
        lo, hi = 0, 10
        if spec.dtype == "uint8":
            hi = 255
        if spec.value_range is not None:
            lo, hi = math.ceil(spec.value_range[0]), math.floor(spec.value_range[1])
        out.append(TensorInput(spec.name, spec.dtype, tuple(spec.example_shape(1)[1:]), lo, hi))
    return out


def _encoded(t: Any) -> bool:
    """A ``BYTES`` input of one element per instance: image bundles (#17) take encoded images
    there."""
    return isinstance(t, dict) and t.get("datatype") == "BYTES" and t.get("shape") in ([-1], [-1, 1])


def v2_takes_images(meta: Any) -> bool:
    """The V2 metadata declares encoded images (a 1-D BYTES input) next to tensor inputs."""
    inputs = meta.get("inputs") if isinstance(meta, dict) else None
    return isinstance(inputs, list) and any(_encoded(t) for t in inputs) \
        and not all(_encoded(t) for t in inputs)


def image_hw(inputs: list[TensorInput]) -> tuple[int, int] | None:
    """(height, width) of the first image-like input: ``[C, H, W]`` or ``[H, W, C]``, C in
    1..4 (the instance shape, no batch axis)."""
    for t in inputs:
        if len(t.shape) != 3:
            continue
        c, h, w = t.shape
        if c in (1, 3, 4) and h > 1 and w > 1:
            return h, w
        h, w, c = t.shape
        if c in (1, 3, 4) and h > 1 and w > 1:
            return h, w
    return None


def from_v2_metadata(meta: Any) -> list[TensorInput]:
    """From ``GET /v2/models/{name}``: variable axes become 1; integers draw from {0, 1}, which
    any id input accepts (V2 metadata carries no range; ``--bundle`` gives the real one). An
    image bundle's encoded-image input (BYTES) is left out: its tensor input is listed."""
    inputs = meta.get("inputs") if isinstance(meta, dict) else None
    if v2_takes_images(meta):
        inputs = [t for t in inputs or [] if not _encoded(t)]
    out = []
    for t in inputs or []:
        dtype = _V2.get(str(t.get("datatype")))
        shape = t.get("shape")
        if dtype is None or not isinstance(shape, list) or not shape:
            return []
        out.append(TensorInput(str(t.get("name")), dtype,
                               tuple(1 if int(d) < 0 else int(d) for d in shape[1:]), 0, 1))
    return out


def batch_arrays(inputs: list[TensorInput], rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """``n`` instances per input, as arrays (what V2 binary requests send)."""
    out: dict[str, np.ndarray] = {}
    for t in inputs:
        shape = (n, *t.shape)
        if t.dtype.startswith("float"):
            out[t.name] = np.round(rng.standard_normal(shape), 4).astype(t.dtype)
        elif t.dtype == "bool":
            out[t.name] = rng.random(shape) < 0.5
        else:
            out[t.name] = rng.integers(t.low, t.high + 1, shape).astype(t.dtype)
    return out


def json_instances(inputs: list[TensorInput], rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
    """``n`` ``{"inputs": {name: nested list}}`` instances for ``/predict[/batch]``."""
    arrays = {k: v.tolist() for k, v in batch_arrays(inputs, rng, n).items()}
    return [{"inputs": {k: v[i] for k, v in arrays.items()}} for i in range(n)]


__all__ = ["TensorInput", "batch_arrays", "from_manifest", "from_v2_metadata", "image_hw",
           "json_instances", "v2_takes_images"]

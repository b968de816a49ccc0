"""V2 datatypes and metadata: how a bundle's tensors and predictions look to a V2 client.

See :mod:`packserve.serve.v2.codec` for the mapping; this module holds the tables and the metadata
documents (server, model, tensors) that both decoding and encoding derive from.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from packserve.bundle import NAMED_OUTPUT_TASKS, Manifest, TensorSpec

__all__ = [
    "FROM_MANIFEST",
    "HEADER_LENGTH",
    "PROTOCOL_EXTENSIONS",
    "U32",
    "WIRE",
    "TensorMeta",
    "image_input",
    "input_metadata",
    "model_metadata",
    "output_metadata",
    "platform_of",
    "server_metadata",
    "v2_shape",
]

HEADER_LENGTH = "Inference-Header-Content-Length"
PROTOCOL_EXTENSIONS = ("binary_tensor_data",)

# V2 datatype -> little-endian numpy dtype (``None``: variable-size BYTES).
WIRE: dict[str, np.dtype[Any] | None] = {
    "BOOL": np.dtype("|b1"),
    "UINT8": np.dtype("|u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("|i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": None,
}
FROM_MANIFEST = {
    "float32": "FP32",
    "float64": "FP64",
    "float16": "FP16",
    "uint8": "UINT8",
    "int64": "INT64",
    "int32": "INT32",
    "bool": "BOOL",
    "string": "BYTES",
}
U32 = struct.Struct("<I")  # BYTES element length prefix


@dataclass(frozen=True, slots=True)
class TensorMeta:
    """One V2 tensor as metadata shows it; ``-1`` marks a variable (batch) dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def v2_shape(spec: TensorSpec) -> tuple[int, ...]:
    return tuple(-1 if d is None else int(d) for d in spec.shape)


def image_input(manifest: Manifest) -> str | None:
    """The ``BYTES`` input of an image bundle (#17): encoded images, one element each
    (``"image"``, or ``"image_bytes"`` if the model's own tensor input is named ``image``);
    ``None`` for every other bundle."""
    if manifest.preprocess is None:
        return None
    return "image_bytes" if any(s.name == "image" for s in manifest.inputs) else "image"


def input_metadata(manifest: Manifest) -> list[TensorMeta]:
    """The artifact's own inputs; an image bundle also takes its encoded images as ``BYTES``
    (a request sends one or the other)."""
    metas = [TensorMeta(s.name, FROM_MANIFEST[s.dtype], v2_shape(s)) for s in manifest.inputs]
    name = image_input(manifest)
    if name is not None:
        metas.append(TensorMeta(name, "BYTES", (-1,)))
    return metas


def _label_datatype(classes: Sequence[Any]) -> str:
    first = classes[0]
    if isinstance(first, bool):
        return "BOOL"
    if isinstance(first, int):
        return "INT64"
    if isinstance(first, float):
        return "FP64"
    return "BYTES"


def output_metadata(manifest: Manifest, *, value_width: int | None = None) -> list[TensorMeta]:
    """The outputs a V2 client sees (see the module docstring for the mapping).

    ``value_width`` is the column count of a multi-output regressor (``None``: one value per
    row); the manifest does not record it, so callers that know it (from warm-up) pass it.
    """
    spec = manifest.outputs
    if spec.task in NAMED_OUTPUT_TASKS:  # every raw output by name, as the artifact computes it
        return [TensorMeta(t.name, FROM_MANIFEST[t.dtype], v2_shape(t)) for t in spec.tensors]
    if spec.task == "regression":
        shape = (-1,) if value_width is None else (-1, value_width)
        return [TensorMeta("value", "FP64", shape)]
    classes = spec.classes or []
    return [
        TensorMeta("label", _label_datatype(classes) if classes else "BYTES", (-1,)),
        TensorMeta("probabilities", "FP64", (-1, len(classes))),
    ]


def platform_of(manifest: Manifest) -> str:
    """Triton's platform names: clients recognise them."""
    return "onnxruntime_onnx" if manifest.format == "onnx" else "pytorch_libtorch"


def model_metadata(
    manifest: Manifest,
    *,
    name: str | None = None,
    versions: Sequence[str] = (),
    value_width: int | None = None,
) -> dict[str, Any]:
    return {
        "name": name or manifest.name,
        "versions": list(versions) or [manifest.version],
        "platform": platform_of(manifest),
        "inputs": [t.to_dict() for t in input_metadata(manifest)],
        "outputs": [t.to_dict() for t in output_metadata(manifest, value_width=value_width)],
    }


def server_metadata(version: str, extensions: Sequence[str] = PROTOCOL_EXTENSIONS) -> dict[str, Any]:
    return {"name": "packserve", "version": version, "extensions": list(extensions)}

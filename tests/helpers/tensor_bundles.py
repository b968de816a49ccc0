"""Tensor bundles written directly (an ONNX graph from onnx.helper + a manifest), no packer.

They give runtime and serve tests real N-D, several-input, integer-input models in
milliseconds, independent of the torch exporter:

* ``two_input``: ``tokens`` int64 ``[N, seq]`` (seq variable, ids in [0, 49]) and ``image``
  float32 ``[N, 3, 4, 4]`` -> ``emb`` ``[N, 4]`` (mean of an embedding lookup) and ``pooled``
  ``[N, 3]`` (mean over the image's spatial axes); ``task='tensor'``.
* ``image_classifier``: ``image`` float32 ``[N, 3, 4, 4]`` -> ``logits`` ``[N, 3]``, served as
  a 3-class classifier (softmax over logits) with string labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

VOCAB = 50
EMBED = np.random.default_rng(3).normal(size=(VOCAB, 4)).astype(np.float32)
WEIGHTS = np.random.default_rng(4).normal(size=(3, 3)).astype(np.float32)


def _save(model, staging: Path) -> None:  # type: ignore[no-untyped-def]
    import onnx

    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(staging / "model.onnx"))


def two_input_onnx(path: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph(
        [
            helper.make_node("Gather", ["E", "tokens"], ["g"]),
            helper.make_node("ReduceMean", ["g", "ax1"], ["emb"], keepdims=0),
            helper.make_node("ReduceMean", ["image", "ax23"], ["pooled"], keepdims=0),
        ],
        "two_input",
        [
            helper.make_tensor_value_info("tokens", TensorProto.INT64, ["N", "seq"]),
            helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 4, 4]),
        ],
        [
            helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["N", 3]),
        ],
        [
            numpy_helper.from_array(EMBED, "E"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "ax1"),
            numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "ax23"),
        ],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    path.mkdir(parents=True, exist_ok=True)
    _save(model, path)


def classifier_onnx(path: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["image", "ax23"], ["pooled"], keepdims=0),
            helper.make_node("MatMul", ["pooled", "W"], ["logits"]),
        ],
        "classifier",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [
            numpy_helper.from_array(WEIGHTS, "W"),
            numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "ax23"),
        ],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    path.mkdir(parents=True, exist_ok=True)
    _save(model, path)


def _manifest(**kw):  # type: ignore[no-untyped-def]
    from packserve.bundle import Manifest, ParityReport

    return Manifest(
        version="1.0.0", format="onnx", artifact="model.onnx", framework="onnx",
        framework_version="test", model_type="test.graph", signature="tensor",
        parity=ParityReport(rows=4, tolerance=0.0, passed=True), **kw,
    )


def write_two_input(out: Path, name: str = "two-input") -> Path:
    from packserve.bundle import OutputSpec, TensorSpec, prepare_output_dir, write_bundle

    staging = prepare_output_dir(out, force=True)
    two_input_onnx(staging)
    m = _manifest(
        name=name, task="tensor",
        inputs=[
            TensorSpec(name="tokens", dtype="int64", shape=[None, None], axes={0: "batch", 1: "seq"},
                       value_range=(0, VOCAB - 1), sample_shape=[4, 6]),
            TensorSpec(name="image", dtype="float32", shape=[None, 3, 4, 4], sample_shape=[4, 3, 4, 4]),
        ],
        outputs=OutputSpec(
            task="tensor", postprocess="none", names=["emb", "pooled"],
            tensors=[TensorSpec(name="emb", dtype="float32", shape=[None, 4]),
                     TensorSpec(name="pooled", dtype="float32", shape=[None, 3])],
        ),
    )
    return write_bundle(staging, out, m)


def write_classifier(out: Path, name: str = "image-clf") -> Path:
    from packserve.bundle import OutputSpec, TensorSpec, prepare_output_dir, write_bundle

    staging = prepare_output_dir(out, force=True)
    classifier_onnx(staging)
    m = _manifest(
        name=name, task="multiclass",
        inputs=[TensorSpec(name="image", dtype="float32", shape=[None, 3, 4, 4],
                           sample_shape=[4, 3, 4, 4])],
        outputs=OutputSpec(
            task="multiclass", postprocess="softmax", probability_output="logits",
            classes=["cat", "dog", "eel"], names=["logits"],
            tensors=[TensorSpec(name="logits", dtype="float32", shape=[None, 3])],
        ),
    )
    return write_bundle(staging, out, m)


def expected_two_input(tokens: np.ndarray, image: np.ndarray) -> dict[str, np.ndarray]:
    """What the two-input graph computes, in numpy (an independent reference)."""
    return {
        "emb": EMBED[tokens].mean(axis=1),
        "pooled": image.astype(np.float32).mean(axis=(2, 3)),
    }


def expected_logits(image: np.ndarray) -> np.ndarray:
    out: np.ndarray = image.astype(np.float32).mean(axis=(2, 3)) @ WEIGHTS
    return out


__all__ = [
    "VOCAB",
    "expected_logits",
    "expected_two_input",
    "write_classifier",
    "write_two_input",
]

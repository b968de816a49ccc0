"""Keras 3 models (Sequential, functional, subclassed once called) -> ONNX.

The export path is Keras's own ``model.export(path, format="onnx")`` (TensorFlow backend, which
converts through tf2onnx): measured on tensorflow-cpu 2.21 / keras 3.15 at well under a second
with max |Δ| ~1e-7. ``tf2onnx.convert.from_keras`` fails on Keras 3 models and the SavedModel
route takes ~10 s (issue #18), so neither is used here. The ONNX outputs get the model's own
output names; inputs keep the model's input names.

The meaning of the output comes from the final activation (``sigmoid`` with one unit ->
binary, ``softmax`` -> multiclass) or a compiled regression loss with a linear final layer;
anything else asks for ``task=``. A single rank-2 float input makes a table bundle; images,
sequences and several inputs make a tensor bundle (see :mod:`.tf_common`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from packserve.bundle import TensorSpec
from packserve.errors import PackError, UnsupportedModelError
from packserve.pack.families import tf_common as tc
from packserve.pack.family import (
    Export,
    ExportJob,
    dist_version,
    model_type,
)

ARTIFACT = "model.onnx"
_LAST = {"sigmoid": "Sigmoid", "softmax": "Softmax", "log_softmax": "LogSoftmax", "linear": None}


def _activation(layer: Any) -> str | None:
    """What the final layer's activation says about the output ('Sigmoid', 'Softmax', ...)."""
    kind = type(layer).__name__
    if kind == "Softmax":
        return "Softmax"
    act = getattr(layer, "activation", None)
    name = getattr(act, "__name__", None) or (act if isinstance(act, str) else None)
    if name is None:
        return None
    return _LAST.get(name, name)


def _loss_name(model: Any) -> str | None:
    loss = getattr(model, "loss", None)
    if loss is None:
        return None
    if isinstance(loss, str):
        return loss
    return str(getattr(loss, "name", None) or getattr(loss, "__name__", None) or type(loss).__name__)


def describe(model: Any, sample: Any = None) -> tc.TFGraph:
    """The model's inputs, outputs and native call; a subclassed model (no symbolic inputs)
    takes one input named ``input`` shaped like the sample."""
    tc.require_tf()
    import keras

    if not isinstance(model, keras.Model):
        raise UnsupportedModelError(f"cannot pack a {model_type(model)}: not a keras.Model")
    if not model.built:
        raise PackError(f"{type(model).__name__} is not built: call it on data (or fit it) once "
                        "before packing, so its input shapes are known")
    try:
        symbolic = list(model.inputs)
    except (AttributeError, ValueError):
        symbolic = []
    graph_names: list[str] = []
    if symbolic:
        graph_names = [str(t.name) for t in symbolic]
        inputs = [TensorSpec(name=tc.input_name(n, i, len(symbolic)), dtype=tc.dtype_name(t.dtype),
                             shape=[None, *list(t.shape)[1:]])
                  for i, (n, t) in enumerate(zip(graph_names, symbolic, strict=True))]
    else:
        arr = np.asarray(sample) if sample is not None and not isinstance(sample, Mapping) else None
        if arr is None or arr.ndim < 1:
            raise PackError(f"{type(model).__name__} has no symbolic inputs (a subclassed model): "
                            "pass one array as the sample")
        inputs = [TensorSpec(name="input", dtype="float32", shape=[None, *arr.shape[1:]])]
    try:
        outputs = [str(n) for n in model.output_names]
    except (AttributeError, ValueError):
        outputs = []
    outputs = outputs or ["output"]
    names = [s.name for s in inputs]

    def call(arrays: tc.Arrays) -> tc.Arrays:
        args = [arrays[n] for n in names]
        out = model(args if len(args) > 1 else args[0], training=False)
        if isinstance(out, Mapping):
            got = {str(k): keras.ops.convert_to_numpy(v) for k, v in out.items()}
            return {n: got[n] for n in outputs} if set(outputs) <= set(got) else got
        seq = list(out) if isinstance(out, list | tuple) else [out]
        if len(seq) != len(outputs):
            raise PackError(f"the model returned {len(seq)} outputs, its output_names are {outputs}")
        return {n: np.asarray(keras.ops.convert_to_numpy(v)) for n, v in zip(outputs, seq, strict=True)}

    last = _activation(model.layers[-1]) if model.layers else None
    return tc.TFGraph(inputs=inputs, outputs=outputs, call=call, last=last, loss=_loss_name(model),
                      graph_names=graph_names)



class KerasFamily(tc.TFFamily):
    title = "Keras"
    step = "exporting with keras model.export(format='onnx')"

    def describe_model(self, model: Any, sample: Any) -> tc.TFGraph:
        return describe(model, sample)

    def native_failure(self, model: Any) -> str:
        return f"{type(model).__name__} failed on the sample"

    def export(self, job: ExportJob) -> Export:
        import onnx

        opset = self.opset(job)
        path = job.staging / self.ARTIFACT
        with tc.converting("keras model.export(format='onnx') failed") as timing:
            job.model.export(str(path), format="onnx", opset_version=opset, verbose=False)
        proto = onnx.load(str(path))
        tc.rename_outputs(proto, self.graph.outputs)
        return self.written(
            job, proto,
            framework="keras",
            framework_version=dist_version("keras"),
            model_type=model_type(job.model),
            converters={d: dist_version(d) for d in ("keras", "tensorflow-cpu", "tf2onnx", "onnx")},
            export={"exporter": "keras model.export(format='onnx', opset_version="
                                f"{opset}) (TensorFlow backend, tf2onnx)",
                    "export_seconds": timing.seconds, "input_precision": "float32",
                    "format_choice": FORMAT_CHOICE},
        )


FORMAT_CHOICE = (
    "ONNX, not SavedModel/.keras: those need TensorFlow at serve time and .keras/.h5 configs "
    "can carry Lambda bytecode; ONNX is a data-only graph ONNX Runtime serves without "
    "TensorFlow (parity measured at pack)"
)

FAMILY = KerasFamily()

__all__ = ["FAMILY", "FORMAT_CHOICE", "KerasFamily", "describe"]

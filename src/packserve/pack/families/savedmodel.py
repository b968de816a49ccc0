"""TensorFlow SavedModel directories -> ONNX, without executing Python from them.

A SavedModel is a graph (``saved_model.pb``) plus variables: no Python code is stored in it.
What *could* call Python is a ``PyFunc``/``EagerPyFunc`` op (a function registered by the
process that saved it); the graph is read as protobuf first and such graphs are refused before
TensorFlow loads anything. The ``serving_default`` signature is then frozen and converted by
tf2onnx (``tf_loader.from_saved_model`` + ``convert.from_graph_def``, ~1 s for small models)
and the loaded signature (graph ops, not Python) is the parity reference.

The output's meaning is read from the graph: the op that produces the output (through
``Identity`` ops) being ``Sigmoid`` / ``Softmax`` says binary / multiclass, as a final Keras
activation does; otherwise ``task=`` says it (``task='regression'`` for a linear output).
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packserve.bundle import TensorSpec
from packserve.errors import PackError, UnsafeFileError
from packserve.pack.families import tf_common as tc
from packserve.pack.family import (
    Export,
    ExportJob,
    converter_errors,
    dist_version,
)

ARTIFACT = "model.onnx"
SIGNATURE = "serving_default"
PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})
FORMAT_CHOICE = (
    "ONNX, not the SavedModel itself: serving a SavedModel needs TensorFlow; its graph converts "
    "to a data-only ONNX graph (no Python from the SavedModel ran) with parity measured at pack"
)
_FINAL = {"Sigmoid": "Sigmoid", "Softmax": "Softmax", "LogSoftmax": "LogSoftmax"}


class SavedModelDir:
    """A SavedModel directory to pack (what ``packserve pack DIR`` and ``load_model_file``
    return); nothing is read until it is packed."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"SavedModelDir({str(self.path)!r})"


def is_saved_model(path: Path) -> bool:
    return path.is_dir() and (path / "saved_model.pb").is_file()


def python_ops(path: Path) -> list[str]:
    """Ops in the SavedModel's graphs (and function library) that would call Python."""
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    try:
        sm.ParseFromString((path / "saved_model.pb").read_bytes())
    except Exception as exc:  # a protobuf decode error of any kind
        raise PackError(
            f"'{path.name}/saved_model.pb' is not a SavedModel: {type(exc).__name__}") from None
    found: set[str] = set()
    for mg in sm.meta_graphs:
        nodes = list(mg.graph_def.node)
        for fn in mg.graph_def.library.function:
            nodes.extend(fn.node_def)
        found.update(n.op for n in nodes if n.op in PYTHON_OPS)
    return sorted(found)


@dataclass
class Frozen:
    """The signature frozen by tf2onnx's loader (variables inlined as constants): what is
    converted, and where the output's final op is read."""

    graph_def: Any
    inputs: list[str]
    outputs: list[str]
    renames: dict[str, str]


def freeze(path: Path) -> Frozen:
    from tf2onnx import tf_loader

    with converter_errors("tf2onnx could not read the SavedModel's graph"), \
            contextlib.redirect_stdout(io.StringIO()):
        _patch_tf2onnx()
        gd, ins, outs, renames = tf_loader.from_saved_model(
            str(path), None, None, tag=None, signatures=[SIGNATURE], return_tensors_to_rename=True)
    return Frozen(gd, list(ins), list(outs), dict(renames))


def final_ops(frozen: Frozen) -> dict[str, str | None]:
    """Per output (renamed): 'Sigmoid' / 'Softmax' / 'LogSoftmax' when that op produces it."""
    nodes = {n.name: n for n in frozen.graph_def.node}
    found: dict[str, str | None] = {}
    for out in frozen.outputs:
        node = nodes.get(out.split(":")[0])
        for _ in range(32):
            if node is None or node.op not in ("Identity", "StopGradient") or not node.input:
                break
            node = nodes.get(node.input[0].split(":")[0].lstrip("^"))
        found[frozen.renames.get(out, out)] = _FINAL.get(node.op) if node is not None else None
    return found


def describe(source: SavedModelDir) -> tuple[tc.TFGraph, Frozen]:
    tf = tc.require_tf()
    tc.require_tf2onnx()
    bad = python_ops(source.path)
    if bad:
        raise UnsafeFileError(
            f"refusing to load {source.path.name}: its graph calls Python ({', '.join(bad)} ops, "
            "functions registered by the process that saved it); export the model without "
            "tf.py_function / tf.numpy_function")
    with converter_errors(f"could not load the SavedModel {source.path.name}"):
        loaded = tf.saved_model.load(str(source.path))
    fn = loaded.signatures.get(SIGNATURE)
    if fn is None:
        raise PackError(f"the SavedModel has no {SIGNATURE!r} signature (it has "
                        f"{sorted(loaded.signatures)}); export it with one")
    in_sig = fn.structured_input_signature[1]
    keys = [str(k) for k in in_sig]
    inputs = [TensorSpec(name=tc.input_name(k, i, len(keys)), dtype=tc.dtype_name(in_sig[k].dtype),
                         shape=[None, *list(in_sig[k].shape)[1:]]) for i, k in enumerate(keys)]
    by_key = dict(zip((s.name for s in inputs), keys, strict=True))
    outputs = [str(k) for k in fn.structured_outputs]
    frozen = freeze(source.path)
    finals = final_ops(frozen)

    def call(arrays: tc.Arrays) -> tc.Arrays:
        got = fn(**{by_key[k]: tf.constant(v) for k, v in arrays.items()})
        return {n: got[n].numpy() for n in outputs}

    last = finals.get(outputs[0]) if len(outputs) == 1 else None
    return tc.TFGraph(inputs=inputs, outputs=outputs, call=call, last=last,
                      graph_names=keys), frozen


class SavedModelFamily(tc.TFFamily):
    title = "TensorFlow SavedModel"
    step = "converting the SavedModel with tf2onnx"

    def __init__(self) -> None:
        super().__init__()
        self._frozen: Frozen | None = None

    def check_model(self, model: Any) -> None:
        if not is_saved_model(model.path):
            raise PackError(f"'{model.path}' is not a SavedModel directory (no saved_model.pb)")

    def describe_model(self, model: Any, sample: Any) -> tc.TFGraph:
        graph, self._frozen = describe(model)
        return graph

    def native_failure(self, model: Any) -> str:
        return "the SavedModel failed on the sample"

    def export(self, job: ExportJob) -> Export:
        tf2onnx = tc.require_tf2onnx()
        fz = self._frozen
        assert fz is not None
        opset = self.opset(job)
        with tc.converting("tf2onnx could not convert the SavedModel") as timing:
            proto, _ = tf2onnx.convert.from_graph_def(
                fz.graph_def, input_names=fz.inputs, output_names=fz.outputs, opset=opset,
                tensors_to_rename=fz.renames)
        tc.rename_outputs(proto, [fz.renames.get(o, o) for o in fz.outputs])
        by_name = {o.name for o in proto.graph.output}
        if set(self.graph.outputs) - by_name:
            raise PackError(f"the converted graph has outputs {sorted(by_name)}, not the "
                            f"signature's {self.graph.outputs}")
        return self.written(
            job, proto, notes=["converted from the graph; no Python from the SavedModel ran"],
            framework="tensorflow",
            framework_version=dist_version("tensorflow-cpu"),
            model_type=f"tensorflow SavedModel ({SIGNATURE})",
            converters={d: dist_version(d) for d in ("tensorflow-cpu", "tf2onnx", "onnx")},
            export={"exporter": f"tf2onnx {dist_version('tf2onnx')} from_saved_model + "
                                f"from_graph_def (opset {opset})",
                    "signature": SIGNATURE, "export_seconds": timing.seconds,
                    "format_choice": FORMAT_CHOICE},
        )


def _patch_tf2onnx() -> None:
    """tf2onnx 1.17 still uses ``np.object`` etc.; Keras ships the numpy-2 patch it applies
    before its own export. Apply the same one (no-op when already applied)."""
    try:
        from keras.src.export.tf2onnx_lib import patch_tf2onnx
    except ImportError:  # pragma: no cover - another keras layout
        return
    patch_tf2onnx()


FAMILY = SavedModelFamily()

__all__ = ["FAMILY", "PYTHON_OPS", "SavedModelDir", "SavedModelFamily", "is_saved_model",
           "python_ops"]

"""scikit-learn models that are not "classifier with probabilities" or "regressor".

skl2onnx converts more than those two, and people serve more: a LinearSVC or an SGDClassifier
(labels, no probabilities), KMeans (a cluster id per row), an outlier detector, a
MultiOutputClassifier, a scaler / PCA / ColumnTransformer on its own (a feature pipeline).
Each becomes a bundle with *named outputs* served as they are (``postprocess='none'``):

=============  ===========================================  ================================
task           outputs                                      native reference (parity)
=============  ===========================================  ================================
``labels``     ``label`` (+ ``scores``: decision function)  ``predict`` (+ ``decision_function``)
``cluster``    ``label`` (+ ``distances``)                  ``predict`` (+ ``transform``)
``transform``  ``output`` (float, one row per input row)    ``transform``
=============  ===========================================  ================================

Outputs are shaped like the native results (a binary decision function is one value per
row, whichever column of the converter's two carries it), so parity compares like with like.
Converters known to be wrong are refused with the reason (:data:`KNOWN_WRONG`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from packserve.bundle import OutputSpec, TensorSpec
from packserve.errors import UnsupportedModelError
from packserve.pack import parity
from packserve.pack.signature import SampleTable

# Measured (benchmarks/bench_sklearn_sweep.py, skl2onnx 1.20): what goes wrong, in words.
KNOWN_WRONG = {
    "LinearDiscriminantAnalysis": "skl2onnx's LinearDiscriminantAnalysis probabilities differ "
    "from scikit-learn's (max |Δp| ≈ 0.15 on a plain 2-class problem)",
    "TunedThresholdClassifierCV": "skl2onnx ignores the tuned decision threshold, so labels "
    "and probabilities come from the inner classifier instead",
    "RadiusNeighborsClassifier": "scikit-learn raises for rows with no neighbour within the "
    "radius and skl2onnx's graph answers them anyway, so the two cannot agree",
    "RadiusNeighborsRegressor": "rows with no neighbour within the radius predict NaN "
    "natively and fail in the ONNX graph",
    "CategoricalNB": "skl2onnx's CategoricalNB graph fails (an index error in ONNX Runtime) on "
    "category values not seen in training, where scikit-learn still predicts",
}
_DTYPES = {1: "float32", 11: "float64", 7: "int64", 6: "int32", 8: "string", 9: "bool"}


def kind_of(model: Any, final: Any) -> str:
    """'classifier' | 'regressor' | 'labels' | 'cluster' | 'transform'; refuses the rest."""
    from sklearn.base import is_classifier, is_outlier_detector, is_regressor

    name = type(final).__name__
    if name in KNOWN_WRONG:
        raise UnsupportedModelError(f"{name} is not packed: {KNOWN_WRONG[name]}")
    multi = isinstance(getattr(final, "classes_", None), list)  # MultiOutputClassifier
    if is_classifier(model) or (hasattr(final, "classes_") and hasattr(model, "predict")):
        return "classifier" if hasattr(model, "predict_proba") and not multi else "labels"
    if is_regressor(model):
        return "regressor"
    if is_outlier_detector(final) and hasattr(model, "predict"):
        return "labels"
    if hasattr(model, "predict") and (hasattr(final, "cluster_centers_") or _is_clusterer(final)):
        return "cluster"
    if hasattr(model, "transform"):
        return "transform"
    if hasattr(model, "fit_predict"):
        raise UnsupportedModelError(
            f"{name} only labels the rows it was fitted on (fit_predict); it has no predict() "
            "for new rows, so there is nothing to serve"
        )
    raise UnsupportedModelError(
        f"{name} has neither predict() nor transform(); packserve serves models and transformers"
    )


def _is_clusterer(est: Any) -> bool:
    """Clusterers, and density estimators whose predict() names a component (GaussianMixture)."""
    tags = getattr(est, "__sklearn_tags__", None)
    kind = getattr(tags(), "estimator_type", None) if callable(tags) else None
    kind = kind or getattr(est, "_estimator_type", "")
    return kind in ("clusterer", "density_estimator")


def native_outputs(model: Any, kind: str, sample: SampleTable) -> parity.NativeOutput:
    """The named native results the artifact must reproduce (see the module table)."""
    x = sample.frame if sample.frame is not None else sample.table
    out: dict[str, np.ndarray] = {}
    if kind == "transform":
        t = model.transform(x)
        out["output"] = np.asarray(t.toarray() if hasattr(t, "toarray") else t, dtype=np.float64)
        return parity.NativeOutput(outputs=out)
    out["label"] = np.asarray(model.predict(x))
    if kind == "labels" and hasattr(model, "decision_function"):
        out["scores"] = np.asarray(model.decision_function(x), dtype=np.float64)
    if kind == "cluster" and hasattr(model, "transform"):
        out["distances"] = np.asarray(model.transform(x), dtype=np.float64)
    return parity.NativeOutput(outputs=out)


def _run(onx: Any, specs: list[TensorSpec], sample: SampleTable) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    col = {n: i for i, n in enumerate(sample.names)}
    feeds = {}
    for s in specs:
        block = sample.table[:, [col[f] for f in s.features]]
        feeds[s.name] = block.astype(object if s.dtype == "string" else s.dtype)
    return list(sess.run(None, feeds))


def _select(onx: Any, source: str, column: int, target: str) -> None:
    """Append ``target = source[:, column]`` (one value per row) and make it the output."""
    from onnx import TensorProto, helper

    index = helper.make_tensor(f"{target}_packserve_column", TensorProto.INT64, [], [column])
    onx.graph.initializer.append(index)
    onx.graph.node.append(helper.make_node("Gather", [source, index.name], [target], axis=1))
    _replace_output(onx, source, target, None)


def _replace_output(onx: Any, old: str, new: str, width: int | None) -> None:
    from onnx import helper

    for i, o in enumerate(onx.graph.output):
        if o.name == old:
            elem = o.type.tensor_type.elem_type
            shape: list[str | int | None] = ["N"] if width is None else ["N", width]
            onx.graph.output.remove(o)
            onx.graph.output.insert(i, helper.make_tensor_value_info(new, elem, shape))
            return


def _cast_bool(onx: Any, name: str) -> None:
    from onnx import TensorProto, helper

    raw = f"{name}_packserve_int"
    _rename(onx, name, raw)
    onx.graph.node.append(helper.make_node("Cast", [raw], [name], to=TensorProto.BOOL))
    for o in onx.graph.output:
        if o.name == raw:
            o.name = name
            o.type.tensor_type.elem_type = TensorProto.BOOL


def _rename(onx: Any, old: str, new: str) -> None:
    if old == new:
        return
    for node in onx.graph.node:
        node.output[:] = [new if n == old else n for n in node.output]
        node.input[:] = [new if n == old else n for n in node.input]
    for o in onx.graph.output:
        if o.name == old:
            o.name = new


def named_output_spec(
    onx: Any, kind: str, native: parity.NativeOutput, specs: list[TensorSpec],
    sample: SampleTable,
) -> tuple[OutputSpec, list[str]]:
    """Shape the converter's outputs like the native ones (module docstring); the spec and
    notes on what was changed."""
    assert native.outputs is not None
    notes: list[str] = []
    dropped = [o.name for o in onx.graph.output if not o.type.HasField("tensor_type")]
    for name in dropped:  # e.g. MultiOutputClassifier's per-output probability sequence
        onx.graph.output.remove(next(o for o in onx.graph.output if o.name == name))
        notes.append(f"converter output {name!r} (a sequence, not a tensor) is not served")
    graph = [o.name for o in onx.graph.output]
    wanted = list(native.outputs)[: len(graph)]
    for extra in graph[len(wanted):]:  # e.g. "probabilities" of a model that has none natively
        onx.graph.output.remove(next(o for o in onx.graph.output if o.name == extra))
        notes.append(f"converter output {extra!r} has no native counterpart; not served")
    for old, new in zip(graph, wanted, strict=False):
        _rename(onx, old, new)
    produced = dict(zip(wanted, _run(onx, specs, sample), strict=False))
    for name in wanted:
        ref, got = native.outputs[name], produced[name]
        if ref.ndim == 1 and got.ndim == 2 and got.shape[1] >= 1:
            ref64 = ref.astype(np.float64) if ref.dtype.kind in "fiub" else None
            best = 0
            if ref64 is not None and got.shape[1] > 1:  # which column is the native value?
                errs = [float(np.abs(got[:, j].astype(np.float64) - ref64).max())
                        for j in range(got.shape[1])]
                best = int(np.argmin(errs))
            raw = f"{name}_packserve_2d"
            _rename(onx, name, raw)
            _select(onx, raw, best, name)
            if got.shape[1] > 1:
                notes.append(f"{name!r} is column {best} of the converter's {got.shape[1]}")
    for name in wanted:
        if native.outputs[name].dtype.kind == "b":  # bool classes come out as int64 0/1
            _cast_bool(onx, name)
            notes.append(f"{name!r} cast to bool, like the native labels")
    produced = dict(zip(wanted, _run(onx, specs, sample), strict=False))
    tensors = []
    for o in onx.graph.output:
        arr = produced[o.name]
        dtype = _DTYPES.get(o.type.tensor_type.elem_type, "float32")
        tensors.append(TensorSpec(name=o.name, dtype=dtype,  # type: ignore[arg-type]
                                  shape=[None, *arr.shape[1:]]))
    spec = OutputSpec(task=kind, postprocess="none",  # type: ignore[arg-type]
                      names=[t.name for t in tensors], tensors=tensors)
    return spec, notes


__all__ = ["KNOWN_WRONG", "kind_of", "named_output_spec", "native_outputs"]

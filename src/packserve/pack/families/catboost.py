"""CatBoostClassifier / CatBoostRegressor -> ONNX through CatBoost's own exporter.

``save_model(format="onnx")`` is CatBoost's supported export; no third-party converter is
involved. Two fixes are applied to what it writes, both recorded in the manifest:

* classifiers end in a ``ZipMap`` (a sequence of {class: probability} maps). It is removed
  and the ensemble's plain ``(n, k)`` probability tensor becomes the ``probabilities``
  output, so every runtime and batcher sees tensors only;
* the regression output is declared ``[N]`` but computed ``[N, 1]``; the declaration is
  corrected so ONNX Runtime does not warn on every call.

CatBoost's exporter supports numeric features only (no categorical, text or embedding
features); such models are refused with that reason before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from packserve.bundle import OutputSpec, TensorSpec
from packserve.errors import MissingDependencyError, PackError, UnsupportedModelError
from packserve.pack import parity
from packserve.pack.family import (
    Export,
    ExportJob,
    Family,
    converter_errors,
    declared_opsets,
    dist_version,
    model_type,
    write_onnx,
)
from packserve.pack.signature import SampleTable, sample_table

# CatBoost's exporter chooses its own opsets (it has no option for them); this is what the
# supported catboost versions write. A different value is recorded and noted, not refused:
# parity is what proves the artifact.
EXPECTED_OPSETS = {"ai.onnx.ml": 2}
ARTIFACT = "model.onnx"
_CLASSIFIER_LOSSES = ("Logloss", "CrossEntropy", "MultiClass", "MultiClassOneVsAll")


def _require() -> None:
    try:
        import catboost  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("catboost", "catboost") from exc


def _kind(model: Any) -> str:
    """'classifier' | 'regressor'; refuses other CatBoost objects with the reason."""
    from catboost import CatBoostClassifier, CatBoostRegressor

    if isinstance(model, CatBoostClassifier):
        return "classifier"
    if isinstance(model, CatBoostRegressor):
        return "regressor"
    raise UnsupportedModelError(
        f"cannot pack a catboost {type(model).__name__}; supported: CatBoostClassifier, "
        "CatBoostRegressor (load a saved model with CatBoostClassifier().load_model(path) "
        "or CatBoostRegressor().load_model(path))"
    )


def _check(model: Any, kind: str) -> None:
    if not model.is_fitted():
        raise PackError(f"{type(model).__name__} is not fitted; fit it before packing")
    unsupported = {
        "categorical": model.get_cat_feature_indices(),
        "text": model.get_text_feature_indices(),
        "embedding": model.get_embedding_feature_indices(),
    }
    found = [k for k, v in unsupported.items() if len(v)]
    if found:
        raise UnsupportedModelError(
            f"CatBoost's ONNX export does not support {', '.join(found)} features; this model "
            f"has some (indices {[list(unsupported[k]) for k in found]}). Encode them as numbers "
            "before training to pack it"
        )
    loss = str(model.get_all_params().get("loss_function", ""))
    if kind == "classifier" and loss.split(":")[0] not in _CLASSIFIER_LOSSES:
        raise UnsupportedModelError(f"CatBoostClassifier with loss {loss!r} is not supported")


def _feature_names(model: Any, given: list[str] | None) -> list[str] | None:
    if given is not None:
        return given
    names = [str(n) for n in (model.feature_names_ or [])]
    # CatBoost names unnamed features "0", "1", ...; prefer packserve's f0.. for those.
    if names == [str(i) for i in range(len(names))]:
        return None
    return names


def strip_zipmap(onx: Any, n_classes: int) -> tuple[str, str]:
    """Remove ZipMap nodes in place; return (label output, probability output) names."""
    from onnx import TensorProto, helper

    graph = onx.graph
    zipmaps = [n for n in graph.node if n.op_type == "ZipMap"]
    if len(zipmaps) != 1:
        raise PackError(f"unexpected CatBoost ONNX graph: {len(zipmaps)} ZipMap nodes")
    zipmap = zipmaps[0]
    tensor_name, public_name = zipmap.input[0], zipmap.output[0]
    graph.node.remove(zipmap)
    for node in graph.node:  # the ensemble now writes straight to the public output name
        for i, out in enumerate(node.output):
            if out == tensor_name:
                node.output[i] = public_name
    for i, out in enumerate(graph.output):
        if out.name == public_name:
            graph.output.remove(out)
            graph.output.insert(
                i, helper.make_tensor_value_info(public_name, TensorProto.FLOAT, ["N", n_classes])
            )
            break
    names = [o.name for o in graph.output]
    label = next(n for n in names if n != public_name)
    return label, public_name


def _fix_regression_shape(onx: Any) -> str:
    from onnx import TensorProto, helper

    graph = onx.graph
    out = graph.output[0]
    graph.output.remove(out)
    graph.output.insert(0, helper.make_tensor_value_info(out.name, TensorProto.FLOAT, ["N", 1]))
    return str(out.name)


def _onnx_classes(onx: Any) -> list[Any] | None:
    for node in onx.graph.node:
        if node.op_type == "TreeEnsembleClassifier":
            for attr in node.attribute:
                if attr.name == "classlabels_int64s":
                    return [int(v) for v in attr.ints]
                if attr.name == "classlabels_strings":
                    return [v.decode() for v in attr.strings]
    return None


def _classes(model: Any) -> list[Any]:
    return [c.item() if hasattr(c, "item") else c for c in np.asarray(model.classes_)]


def _classifier_outputs(onx: Any, model: Any, native: parity.NativeOutput) -> OutputSpec:
    classes = _classes(model)
    label_out, proba_out = strip_zipmap(onx, len(classes))
    onnx_classes = _onnx_classes(onx)
    if onnx_classes is not None and [str(c) for c in onnx_classes] != [str(c) for c in classes]:
        raise PackError(f"CatBoost's ONNX classes {onnx_classes} differ from the model's {classes}")
    # Labels from argmax (ties to the first class, like CatBoost's predict) unless the native
    # labels say otherwise; the graph's label tensor breaks ties differently.
    use_graph_label = not parity.labels_are_argmax(native, classes)
    return OutputSpec(
        task="binary" if len(classes) == 2 else "multiclass",
        postprocess="probabilities",
        label_output=label_out if use_graph_label else None,
        probability_output=proba_out, classes=classes,
        names=[o.name for o in onx.graph.output],
    )


def _exported_graph(job: ExportJob) -> Any:
    """CatBoost's own ONNX export of ``job.model``, loaded (the raw file is not kept)."""
    import onnx

    raw = job.staging / "catboost-export.onnx"
    with converter_errors("CatBoost could not export to ONNX"):  # its error, not the host path
        job.model.save_model(
            str(raw), format="onnx",
            export_parameters={"onnx_domain": "ai.catboost", "onnx_model_version": 1,
                               "onnx_graph_name": job.name},
        )
    onx = onnx.load(str(raw))
    raw.unlink()
    return onx


class CatBoostFamily(Family):
    """A fitted CatBoostClassifier/CatBoostRegressor; same contract as the sklearn family."""

    title = "CatBoost"

    def check(self, model: Any, options: Mapping[str, Any]) -> None:
        _require()
        _check(model, _kind(model))

    def read_sample(self, model: Any, sample: Any, feature_names: list[str] | None) -> SampleTable:
        st = sample_table(
            sample, feature_names=_feature_names(model, feature_names), model=model,
            expected_width=len(model.feature_names_),
        )
        if not st.all_numeric:
            raise UnsupportedModelError("CatBoost's ONNX export takes numeric features only")
        return st

    def native(self, model: Any, sample: SampleTable) -> parity.NativeOutput:
        x = sample.frame if sample.frame is not None else sample.table
        if _kind(model) == "classifier":
            return parity.NativeOutput(
                labels=np.asarray(model.predict(x)).reshape(-1),
                probabilities=np.asarray(model.predict_proba(x)),
            )
        return parity.NativeOutput(values=np.asarray(model.predict(x), dtype=np.float64))

    def export(self, job: ExportJob) -> Export:
        import onnx

        onx = _exported_graph(job)
        notes: list[str] = []
        if _kind(job.model) == "classifier":
            outputs = _classifier_outputs(onx, job.model, job.native)
            notes.append("ZipMap removed from CatBoost's export: probabilities are a plain tensor")
        else:
            outputs = OutputSpec(
                task="regression", postprocess="identity", value_output=_fix_regression_shape(onx),
                names=[o.name for o in onx.graph.output],
            )
        onnx.checker.check_model(onx)
        opsets = declared_opsets(onx)
        if opsets != EXPECTED_OPSETS:
            notes.append(f"CatBoost exported opsets {opsets}, expected {EXPECTED_OPSETS}")
        write_onnx(job.staging, onx, ARTIFACT)
        return Export(
            artifact=ARTIFACT,
            inputs=[TensorSpec(name=onx.graph.input[0].name, dtype="float32",
                               shape=[None, len(job.sample.features)], features=job.sample.names)],
            outputs=outputs,
            framework="catboost",
            framework_version=dist_version("catboost"),
            model_type=model_type(job.model),
            converters={d: dist_version(d) for d in ("catboost", "onnx")},
            opsets=opsets,
            export={"input_precision": "float32", "target_opset": "fixed by CatBoost's exporter",
                    "zipmap": False, "exporter": "catboost save_model(format='onnx')"},
            notes=notes,
            failure_hint="CatBoost's ONNX export computes in float32, as CatBoost does natively",
        )


FAMILY = CatBoostFamily()

__all__ = ["EXPECTED_OPSETS", "FAMILY", "CatBoostFamily", "strip_zipmap"]

"""scikit-learn, XGBoost and LightGBM (sklearn API) -> ONNX through skl2onnx.

XGBoost and LightGBM estimators go through the same converter once their onnxmltools
converters are registered with skl2onnx (:mod:`.converters`), so a Pipeline that *ends* in
a booster packs like any other.

Precision: the first export takes float32 inputs (what ONNX tree ensembles and the boosters
themselves use). If that fails parity — typically a scaler before a tree on large-magnitude
features, where rounding the *raw* input to float32 flips branches — a model with
preprocessing is exported again with float64 inputs: preprocessing runs in float64 as it
does natively, and for a booster an explicit cast to float32 is inserted right before it
(XGBoost casts there itself). The manifest records which precision won and why.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from typing import Any

import numpy as np

from packserve.bundle import OutputSpec, TensorSpec
from packserve.errors import PackError, UnsupportedModelError
from packserve.pack import parity
from packserve.pack.families.sklearn import compat
from packserve.pack.families.sklearn.converters import (
    BOOSTERS,
    register_booster_converters,
    require,
    xgb_without_names,
)
from packserve.pack.families.sklearn.kinds import kind_of, named_output_spec, native_outputs
from packserve.pack.family import (
    Attempt,
    Export,
    ExportJob,
    Family,
    converter_errors,
    dist_version,
    model_type,
    write_onnx,
)
from packserve.pack.signature import SampleTable

# Pinned: the converters may emit a *lower* opset when the graph needs nothing newer; the
# manifest's ``opsets`` records what the artifact actually declares, ``export.target_opset``
# the pin.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
FLOAT32 = Attempt("float32")
FLOAT64 = Attempt("float64", "float64 inputs")


def final_estimator(model: Any) -> Any:
    return model.steps[-1][1] if hasattr(model, "steps") else model


def _root(obj: Any) -> str:
    return type(obj).__module__.split(".", 1)[0]


def is_classifier(model: Any) -> bool:
    from sklearn.base import is_classifier as skl_is_classifier

    return bool(skl_is_classifier(model)) or hasattr(final_estimator(model), "classes_")


def _has_column_transformer(model: Any) -> bool:
    return any(type(s[1]).__name__ == "ColumnTransformer" for s in getattr(model, "steps", []))


def _check_model(model: Any) -> None:
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    kind_of(model, final_estimator(model))  # refuses what cannot be served, with the reason
    try:
        check_is_fitted(model)
    except NotFittedError as exc:
        raise PackError(f"{type(model).__name__} is not fitted; fit it before packing") from exc
    except TypeError:  # not an estimator check_is_fitted understands; conversion will tell
        pass
    if compat.native_categorical_hist_gradient_boosting(model):
        raise UnsupportedModelError(
            "skl2onnx cannot convert HistGradientBoosting with categorical_features (native "
            "categorical splits); encode those columns in the pipeline (e.g. OneHotEncoder or "
            "OrdinalEncoder in a ColumnTransformer) instead"
        )


def _convertible(model: Any, cast_before_final: bool) -> tuple[Any, list[str]]:
    """The model as the converter should see it (same predictions), plus what was changed."""
    from sklearn.pipeline import Pipeline

    changes: list[str] = []
    final = final_estimator(model)
    new_final = final
    if _root(final) == "xgboost":
        new_final = xgb_without_names(final)
        if new_final is not final:
            changes.append("xgboost feature names replaced by f<i> for the converter")
    if not hasattr(model, "steps"):
        return new_final, changes
    steps = list(model.steps[:-1])
    if cast_before_final:
        from skl2onnx.sklapi import CastTransformer

        steps.append(("packserve_cast_float32", CastTransformer(dtype=np.float32)))
        changes.append(f"float64 preprocessing, cast to float32 before {type(final).__name__}")
    if new_final is final and not cast_before_final:
        return model, changes
    steps.append((model.steps[-1][0], new_final))
    return Pipeline(steps), changes


def _initial_types(
    sample: SampleTable, double: bool, named: bool
) -> tuple[list[Any], list[TensorSpec]]:
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType

    num_type = DoubleTensorType if double else FloatTensorType
    num_dtype = "float64" if double else "float32"
    if not named:
        n = len(sample.features)
        return [("input", num_type([None, n]))], [
            TensorSpec(name="input", dtype=num_dtype, shape=[None, n], features=sample.names)
        ]
    # One [None, 1] tensor per column, named like the column, so that a ColumnTransformer's
    # column selectors resolve inside the ONNX graph and string columns stay strings.
    types: list[Any] = []
    specs: list[TensorSpec] = []
    for f in sample.features:
        if f.dtype == "string":
            types.append((f.name, StringTensorType([None, 1])))
            specs.append(TensorSpec(name=f.name, dtype="string", shape=[None, 1], features=[f.name]))
        else:
            types.append((f.name, num_type([None, 1])))
            specs.append(TensorSpec(name=f.name, dtype=num_dtype, shape=[None, 1], features=[f.name]))
    return types, specs


def _native(model: Any, sample: SampleTable) -> parity.NativeOutput:
    kind = kind_of(model, final_estimator(model))
    if kind not in ("classifier", "regressor"):
        return native_outputs(model, kind, sample)
    x = sample.frame if sample.frame is not None else sample.table
    if is_classifier(model):
        return parity.NativeOutput(
            labels=np.asarray(model.predict(x)), probabilities=np.asarray(model.predict_proba(x))
        )
    return parity.NativeOutput(values=np.asarray(model.predict(x), dtype=np.float64))


def _family(model: Any) -> tuple[str, str]:
    """(framework name, version) of the estimator that does the predicting."""
    root = _root(final_estimator(model))
    dist = {"sklearn": "scikit-learn"}.get(root, root)
    return root, dist_version(dist)


def _convert(
    model: Any, types: list[Any], opset: dict[str, int], classifier: bool
) -> tuple[Any, list[str]]:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.exceptions import MissingConverter, MissingShapeCalculator

    from packserve.pack.families import SUPPORTED

    options: dict[Any, Any] = {}
    if classifier:
        options = {id(final_estimator(model)): {"zipmap": False}}
    workarounds: list[str] = []
    with ExitStack() as stack:
        if compat.contains_hist_gradient_boosting(model):
            workarounds.append(stack.enter_context(compat.hist_gradient_boosting_fix()))
        stack.enter_context(converter_errors(f"skl2onnx could not convert {type(model).__name__}"))
        try:
            try:
                onx = convert_sklearn(model, initial_types=types, target_opset=opset,
                                      options=options)
            except NameError as exc:  # this converter has no zipmap option (LinearSVC, RFE)
                if "zipmap" not in str(exc):
                    raise
                onx = convert_sklearn(model, initial_types=types, target_opset=opset)
            except AssertionError as exc:  # "no longer works for opset 17 < 18" (KNNImputer)
                needs = re.search(r"opset (\d+) < (\d+)", str(exc))
                if not needs:
                    raise
                opset = {**opset, "": int(needs.group(2))}
                onx = convert_sklearn(model, initial_types=types, target_opset=opset,
                                      options=options)
                workarounds.append(f"ai.onnx opset {needs.group(2)} (a step's converter needs it)")
        except (MissingConverter, MissingShapeCalculator) as exc:
            found = re.search(r"type '?<?class '([^']+)'", str(exc))
            what = found.group(1).rsplit(".", 1)[-1] if found else type(model).__name__
            raise UnsupportedModelError(
                f"skl2onnx has no converter for {what}; supported: {SUPPORTED}"
            ) from exc
    return onx, workarounds


# Estimators whose predict() is not the argmax of predict_proba (SVC's label comes from its
# decision function, its probabilities from a separate Platt calibration).
LABEL_NOT_ARGMAX = ("SVC", "NuSVC")


def _output_spec(onx: Any, model: Any, native: parity.NativeOutput) -> OutputSpec:
    names = [o.name for o in onx.graph.output]
    for o in onx.graph.output:
        if not o.type.HasField("tensor_type"):
            raise PackError(f"converter emitted a non-tensor output {o.name!r} (ZipMap left on?)")
    if is_classifier(model):
        if len(names) < 2:
            raise UnsupportedModelError(
                f"skl2onnx's converter for {type(model).__name__} emits labels only, without "
                "the probabilities its predict_proba gives; it cannot be packed as a classifier"
            )
        classes = [c.item() if hasattr(c, "item") else c for c in np.asarray(model.classes_)]
        graph_label = type(final_estimator(model)).__name__ in LABEL_NOT_ARGMAX or not (
            parity.labels_are_argmax(native, classes)
        )
        return OutputSpec(
            task="binary" if len(classes) == 2 else "multiclass",
            postprocess="probabilities",
            label_output=names[0] if graph_label else None,
            probability_output=names[1],
            classes=classes,
            names=names,
        )
    return OutputSpec(task="regression", postprocess="identity", value_output=names[0], names=names)


def _label_rule(outputs: OutputSpec) -> str:
    if outputs.task in ("labels", "cluster"):
        return "graph output 'label' (the native predict())"
    if outputs.task in ("regression", "transform"):
        return "n/a"
    if outputs.label_output:
        return f"graph output {outputs.label_output!r} (native labels are not argmax of probabilities)"
    return "argmax of probabilities, ties to the first class (as the native model)"


_FLOAT32_TREE_MODULES = ("sklearn.tree.", "sklearn.ensemble._forest", "sklearn.ensemble._gb",
                         "sklearn.ensemble._iforest")


def _reads_float32(final: Any) -> bool:
    """Estimators that cast X to float32 themselves before comparing with split thresholds.

    scikit-learn's decision trees (and forests / gradient boosting built on them) do, like the
    boosters: a float64 export must cast right before them, or it compares values the native
    model never sees.
    """
    return type(final).__module__.startswith(_FLOAT32_TREE_MODULES)


def _has_trees(model: Any) -> bool:
    """Whether a float32 tree split could be what went wrong (the hint applies)."""
    final = final_estimator(model)
    return _reads_float32(final) or _root(final) in BOOSTERS or "HistGradientBoosting" in (
        type(final).__name__)


FLOAT32_HINT = (
    "the artifact reads float32 inputs; rounding large-magnitude features to float32 can "
    "flip tree splits — scale such features inside the model, or pass "
    "allow_parity_failure / --allow-parity-failure to write it with the failure recorded"
)


def _notes(job: ExportJob, changes: list[str], workarounds: list[str]) -> list[str]:
    notes = list(changes)
    if workarounds:
        notes.append("converted with packserve.pack.families.sklearn.compat workaround(s): "
                     + ", ".join(workarounds))
    if job.attempt is FLOAT64 and job.options.get("double") is None:
        last = job.previous
        notes.append(
            "float32 export failed parity (float32 rounding of the raw inputs flips tree "
            "branches, e.g. after a scaler on large-magnitude features); exported with "
            "float64 inputs instead"
            + (f" — float32 result: {parity.describe_failure(last.report)}" if last else "")
        )
    return notes


class SklearnFamily(Family):
    """A scikit-learn estimator/Pipeline (or XGBoost/LightGBM sklearn-API model)."""

    title = "scikit-learn"
    options = frozenset({"target_opset", "double"})

    def check(self, model: Any, options: Mapping[str, Any]) -> None:
        require(_family(model)[0])
        _check_model(model)
        register_booster_converters()

    def native(self, model: Any, sample: SampleTable) -> parity.NativeOutput:
        return _native(model, sample)

    def attempts(self, model: Any, options: Mapping[str, Any]) -> Sequence[Attempt]:
        """Input precisions to try, in order: float32 (what ONNX tree ensembles and the
        boosters use), then float64 when preprocessing may need it (module docstring)."""
        double: bool | None = options.get("double")
        if double is not None:
            return [FLOAT64 if double else FLOAT32]
        if len(getattr(model, "steps", [])) > 1:
            return [FLOAT32, FLOAT64]
        if _family(model)[0] == "sklearn" and not _reads_float32(model):
            return [FLOAT32, FLOAT64]
        # a bare booster or scikit-learn tree: float32 *is* its precision; float64 changes
        # nothing (and a float64 tree ensemble does not load in ONNX Runtime)
        return [FLOAT32]

    def export(self, job: ExportJob) -> Export:
        model, st = job.model, job.sample
        fam, fam_version = _family(model)
        use_double = job.attempt is FLOAT64
        opset = dict(job.options.get("target_opset") or TARGET_OPSET)
        named = st.frame is not None and (not st.all_numeric or _has_column_transformer(model))
        cast = use_double and (fam in BOOSTERS or _reads_float32(final_estimator(model)))
        convertible, changes = _convertible(model, cast_before_final=cast)
        types, specs = _initial_types(st, use_double, named)
        kind = kind_of(model, final_estimator(model))
        onx, workarounds = _convert(convertible, types, opset, kind in ("classifier", "labels"))
        if kind in ("classifier", "regressor"):
            outputs = _output_spec(onx, model, job.native)
        else:
            outputs, reshaped = named_output_spec(onx, kind, job.native, specs, st)
            changes.extend(reshaped)
        opsets = write_onnx(job.staging, onx)
        return Export(
            artifact="model.onnx",
            inputs=specs,
            outputs=outputs,
            framework=fam,
            framework_version=fam_version,
            model_type=model_type(model),
            converters={d: dist_version(d) for d in ("skl2onnx", "onnxmltools", "onnx", "protobuf")},
            opsets=opsets,
            export={
                "input_precision": "float64" if use_double else "float32",
                "target_opset": opset,
                "zipmap": False,
                "workarounds": workarounds,
                "labels": _label_rule(outputs),
            },
            notes=_notes(job, changes, workarounds),
            failure_hint=None if use_double or not _has_trees(model) else FLOAT32_HINT,
        )


FAMILY = SklearnFamily()

__all__ = ["FAMILY", "FLOAT32_HINT", "TARGET_OPSET", "SklearnFamily", "final_estimator",
           "is_classifier"]

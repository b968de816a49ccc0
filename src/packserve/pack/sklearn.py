"""scikit-learn, XGBoost and LightGBM (sklearn API) -> ONNX through skl2onnx.

XGBoost and LightGBM estimators are not known to skl2onnx out of the box: their
onnxmltools converters are registered first (the step a bare ``convert_sklearn`` call
skips, and fails on). Registering them with skl2onnx — rather than calling onnxmltools
directly — is what lets the same code pack a Pipeline that *ends* in a booster.
"""

from __future__ import annotations

import os
from importlib import metadata
from typing import Any

import numpy as np

from packserve.bundle import OutputSpec, TensorSpec, prepare_output_dir
from packserve.errors import MissingDependencyError, PackError, ParityError, UnsupportedModelError
from packserve.pack import parity
from packserve.pack.build import Export, PackResult, finish
from packserve.pack.signature import SampleTable, model_width, sample_table

TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
_registered = False


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def register_booster_converters() -> None:
    """Teach skl2onnx about XGBoost / LightGBM estimators (idempotent)."""
    global _registered
    if _registered:
        return
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    cls_opts = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    try:
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
        from xgboost import XGBClassifier, XGBRegressor

        update_registered_converter(
            XGBClassifier, "XGBoostXGBClassifier",
            calculate_linear_classifier_output_shapes, convert_xgboost, options=cls_opts,
        )
        update_registered_converter(
            XGBRegressor, "XGBoostXGBRegressor",
            calculate_linear_regressor_output_shapes, convert_xgboost,
        )
    except ImportError:
        pass
    try:
        from lightgbm import LGBMClassifier, LGBMRegressor
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm

        update_registered_converter(
            LGBMClassifier, "LightGbmLGBMClassifier",
            calculate_linear_classifier_output_shapes, convert_lightgbm, options=cls_opts,
        )
        update_registered_converter(
            LGBMRegressor, "LightGbmLGBMRegressor",
            calculate_linear_regressor_output_shapes, convert_lightgbm,
            options={"split": None},
        )
    except ImportError:
        pass
    _registered = True


def _require(fam: str) -> None:
    try:
        import skl2onnx  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("skl2onnx", fam) from exc
    if fam in ("xgboost", "lightgbm"):
        try:
            import onnxmltools  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError("onnxmltools", fam) from exc


def _initial_types(sample: SampleTable, double: bool) -> tuple[list[Any], list[TensorSpec]]:
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType

    if sample.all_numeric and sample.frame is None:
        n = len(sample.features)
        t = DoubleTensorType if double else FloatTensorType
        dtype = "float64" if double else "float32"
        return [("input", t([None, n]))], [
            TensorSpec(name="input", dtype=dtype, shape=[None, n], features=sample.names)
        ]
    # DataFrame input: one [None, 1] tensor per column, named like the column, so that a
    # ColumnTransformer's column selectors resolve inside the ONNX graph.
    types: list[Any] = []
    specs: list[TensorSpec] = []
    for f in sample.features:
        if f.dtype == "string":
            types.append((f.name, StringTensorType([None, 1])))
            specs.append(TensorSpec(name=f.name, dtype="string", shape=[None, 1], features=[f.name]))
        else:
            t = DoubleTensorType if double else FloatTensorType
            dtype = "float64" if double else "float32"
            types.append((f.name, t([None, 1])))
            specs.append(TensorSpec(name=f.name, dtype=dtype, shape=[None, 1], features=[f.name]))
    return types, specs


def _is_classifier(model: Any) -> bool:
    return hasattr(model, "classes_") and hasattr(model, "predict_proba")


def _native(model: Any, sample: SampleTable) -> parity.NativeOutput:
    x = sample.frame if sample.frame is not None else sample.table
    if _is_classifier(model):
        return parity.NativeOutput(
            labels=np.asarray(model.predict(x)), probabilities=np.asarray(model.predict_proba(x))
        )
    return parity.NativeOutput(values=np.asarray(model.predict(x), dtype=np.float64))


def _family(model: Any) -> tuple[str, str]:
    """(framework name, version) of the estimator that does the predicting."""
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    root = type(final).__module__.split(".", 1)[0]
    dist = {"sklearn": "scikit-learn"}.get(root, root)
    return root, _version(dist)


def _convert(
    model: Any, sample: SampleTable, double: bool, opset: dict[str, int]
) -> tuple[Any, list[TensorSpec]]:
    from skl2onnx import convert_sklearn

    types, specs = _initial_types(sample, double)
    options: dict[Any, Any] = {}
    if _is_classifier(model):
        final = model.steps[-1][1] if hasattr(model, "steps") else model
        options = {id(final): {"zipmap": False}}
    try:
        onx = convert_sklearn(model, initial_types=types, target_opset=opset, options=options)
    except Exception as exc:
        raise PackError(
            f"skl2onnx could not convert {type(model).__name__}: {type(exc).__name__}: {exc}"
        ) from exc
    return onx, specs


def _output_spec(onx: Any, model: Any) -> OutputSpec:
    names = [o.name for o in onx.graph.output]
    if _is_classifier(model):
        classes = [c.item() if hasattr(c, "item") else c for c in np.asarray(model.classes_)]
        return OutputSpec(
            task="binary" if len(classes) == 2 else "multiclass",
            postprocess="probabilities",
            label_output=names[0],
            probability_output=names[1],
            classes=classes,
            names=names,
        )
    return OutputSpec(task="regression", postprocess="identity", value_output=names[0], names=names)


def pack_model(
    model: Any,
    out_dir: str | os.PathLike[str],
    *,
    sample: Any,
    name: str,
    version: str,
    feature_names: list[str] | None,
    force: bool,
    allow_parity_failure: bool,
    target_opset: dict[str, int] | None = None,
    double: bool | None = None,
) -> PackResult:
    fam, fam_version = _family(model)
    _require(fam)
    if not hasattr(model, "predict"):
        raise UnsupportedModelError(f"{type(model).__name__} has no predict(); is it fitted?")
    register_booster_converters()
    opset = dict(target_opset or TARGET_OPSET)
    st = sample_table(sample, feature_names=feature_names, model=model, expected_width=model_width(model))
    native = _native(model, st)

    # float32 first (what every runtime and booster expects); on a parity failure, a
    # numeric scikit-learn model is retried in float64, and the reason is recorded.
    attempts = [double] if double is not None else [False, True] if fam == "sklearn" else [False]
    last: ParityError | None = None
    for use_double in attempts:
        staging = prepare_output_dir(out_dir, force=force)
        onx, specs = _convert(model, st, use_double, opset)
        (staging / "model.onnx").write_bytes(onx.SerializeToString())
        notes = []
        if use_double and double is None:
            notes.append(
                "float32 export failed parity (float32 rounding flips tree branches, e.g. after "
                "a scaler on large-magnitude features); exported with float64 inputs instead"
                + (f" — float32 result: {last}" if last else "")
            )
        exp = Export(
            artifact="model.onnx",
            inputs=specs,
            outputs=_output_spec(onx, model),
            framework=fam,
            framework_version=fam_version,
            model_type=f"{type(model).__module__}.{type(model).__qualname__}",
            converters={"skl2onnx": _version("skl2onnx"), "onnxmltools": _version("onnxmltools"),
                        "onnx": _version("onnx")},
            opsets={d.domain or "": int(d.version) for d in onx.opset_import},
            export={"input_precision": "float64" if use_double else "float32"},
            notes=notes,
        )
        try:
            return finish(
                exp, st, native, staging, out_dir, name=name, version=version,
                allow_parity_failure=allow_parity_failure and use_double == attempts[-1],
            )
        except ParityError as exc:
            last = exc
    assert last is not None
    raise last

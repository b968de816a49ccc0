"""Raw boosters (``xgboost.Booster``, ``lightgbm.Booster``): what ``xgb.train`` /
``lgb.train`` return and what native model files load as.

* An XGBoost Booster becomes the equivalent ``XGBClassifier`` / ``XGBRegressor`` (chosen
  from its objective) through XGBoost's own ``load_model`` and goes through the sklearn
  packer — one code path for every XGBoost model.
* A LightGBM Booster has no public way back to ``LGBMClassifier``; it is converted with
  ``onnxmltools.convert_lightgbm``, which accepts Boosters directly. That entry point's
  topology supports opsets up to 15, so this path pins ``{"": 15, "ai.onnx.ml": 3}``.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import numpy as np

from packserve.bundle import OutputSpec, TensorSpec, prepare_output_dir
from packserve.errors import MissingDependencyError, PackError, UnsupportedModelError
from packserve.pack import parity
from packserve.pack.build import Export, PackResult, finish
from packserve.pack.progress import step
from packserve.pack.signature import sample_table
from packserve.pack.sklearn import FLOAT32_HINT, _version

LIGHTGBM_OPSET = 15
LIGHTGBM_ML_OPSET = 3
_RANKING = ("lambdarank", "rank_xendcg", "rank:")


# --- XGBoost -------------------------------------------------------------------------------


def xgboost_objective(booster: Any) -> str:
    return str(json.loads(booster.save_config())["learner"]["objective"]["name"])


def xgboost_estimator(booster: Any) -> Any:
    """The sklearn-API estimator equivalent to ``booster`` (classifier or regressor)."""
    from xgboost import XGBClassifier, XGBRegressor

    objective = xgboost_objective(booster)
    if objective.startswith(_RANKING):
        raise UnsupportedModelError(f"XGBoost ranking objective {objective!r} is not supported")
    est = XGBClassifier() if objective.startswith(("binary:", "multi:")) else XGBRegressor()
    est.load_model(bytearray(booster.save_raw("ubj")))
    return est


# --- LightGBM ------------------------------------------------------------------------------


def lightgbm_task(booster: Any) -> tuple[str, int]:
    """(task, number of classes) from the booster's objective."""
    header = booster.dump_model(num_iteration=1)
    objective = str(header.get("objective", "")).split(" ")[0]
    if objective.startswith(_RANKING):
        raise UnsupportedModelError(f"LightGBM ranking objective {objective!r} is not supported")
    if objective == "binary":
        return "binary", 2
    if objective in ("multiclass", "multiclassova"):
        return "multiclass", int(header.get("num_class", 0))
    return "regression", 0


def _lightgbm_native(booster: Any, x: np.ndarray, task: str) -> parity.NativeOutput:
    raw = np.asarray(booster.predict(x), dtype=np.float64)
    if task == "regression":
        return parity.NativeOutput(values=raw)
    probs = np.stack([1.0 - raw, raw], axis=1) if task == "binary" else raw
    return parity.NativeOutput(labels=np.argmax(probs, axis=1), probabilities=probs)


def pack_lightgbm_booster(
    booster: Any,
    out_dir: str | os.PathLike[str],
    *,
    sample: Any,
    name: str,
    version: str,
    feature_names: list[str] | None,
    force: bool,
    allow_parity_failure: bool,
) -> PackResult:
    try:
        import onnxmltools
        from onnxmltools.convert.common.data_types import FloatTensorType
    except ImportError as exc:
        raise MissingDependencyError("onnxmltools", "lightgbm") from exc
    task, n_classes = lightgbm_task(booster)
    names = feature_names
    if names is None:
        model_names = [str(n) for n in booster.feature_name()]
        if model_names != [f"Column_{i}" for i in range(len(model_names))]:
            names = model_names
    st = sample_table(sample, feature_names=names, expected_width=booster.num_feature())
    if not st.all_numeric:
        raise UnsupportedModelError("a LightGBM Booster is packed with numeric features only")
    native = _lightgbm_native(booster, st.table, task)

    step("converting")
    staging = prepare_output_dir(out_dir, force=force)
    n = len(st.features)
    try:
        try:
            onx = onnxmltools.convert_lightgbm(
                booster, initial_types=[("input", FloatTensorType([None, n]))],
                zipmap=False, target_opset=LIGHTGBM_OPSET,
            )
        except Exception as exc:
            raise PackError(
                f"onnxmltools could not convert the LightGBM Booster: {type(exc).__name__}: "
                f"{str(exc)[:300]}"
            ) from exc
        (staging / "model.onnx").write_bytes(onx.SerializeToString())
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    out_names = [o.name for o in onx.graph.output]
    if task == "regression":
        outputs = OutputSpec(task="regression", postprocess="identity",
                             value_output=out_names[0], names=out_names)
    else:
        outputs = OutputSpec(task=task, postprocess="probabilities",  # type: ignore[arg-type]
                             label_output=out_names[0], probability_output=out_names[1],
                             classes=list(range(n_classes)), names=out_names)
    exp = Export(
        artifact="model.onnx",
        inputs=[TensorSpec(name="input", dtype="float32", shape=[None, n], features=st.names)],
        outputs=outputs,
        framework="lightgbm",
        framework_version=_version("lightgbm"),
        model_type="lightgbm.basic.Booster",
        converters={"onnxmltools": _version("onnxmltools"), "onnx": _version("onnx")},
        opsets={d.domain or "": int(d.version) for d in onx.opset_import},
        export={"input_precision": "float32",
                "target_opset": {"": LIGHTGBM_OPSET, "ai.onnx.ml": LIGHTGBM_ML_OPSET},
                "zipmap": False},
        notes=["raw LightGBM Booster: classes are the booster's class indices 0..k-1"]
        if task != "regression" else [],
        failure_hint=FLOAT32_HINT,
    )
    return finish(exp, st, native, staging, out_dir, name=name, version=version,
                  allow_parity_failure=allow_parity_failure)


def pack_model(model: Any, out_dir: str | os.PathLike[str], **common: Any) -> PackResult:
    """Dispatch a raw Booster: XGBoost via its sklearn estimator, LightGBM via onnxmltools."""
    root = type(model).__module__.split(".", 1)[0]
    if root == "xgboost":
        from packserve.pack import sklearn

        return sklearn.pack_model(xgboost_estimator(model), out_dir, **common)
    if root == "lightgbm":
        unknown = set(common) - {"sample", "name", "version", "feature_names", "force",
                                 "allow_parity_failure"}
        if unknown:
            raise PackError(f"unknown option(s) for a LightGBM Booster: {sorted(unknown)}")
        return pack_lightgbm_booster(model, out_dir, **common)
    raise UnsupportedModelError(f"not a booster packserve knows: {type(model).__name__}")


__all__ = ["lightgbm_task", "pack_model", "xgboost_estimator", "xgboost_objective"]

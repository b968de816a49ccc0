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
from collections.abc import Mapping
from typing import Any

import numpy as np

from packserve.bundle import OutputSpec, TensorSpec
from packserve.errors import MissingDependencyError, UnsupportedModelError
from packserve.pack import parity
from packserve.pack.families.sklearn import FAMILY as SKLEARN
from packserve.pack.families.sklearn import FLOAT32_HINT
from packserve.pack.family import (
    Export,
    ExportJob,
    Family,
    converter_errors,
    dist_version,
    write_onnx,
)
from packserve.pack.signature import SampleTable, sample_table

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


def _outputs(onx: Any, task: str, n_classes: int) -> OutputSpec:
    out_names = [o.name for o in onx.graph.output]
    if task == "regression":
        return OutputSpec(task="regression", postprocess="identity",
                          value_output=out_names[0], names=out_names)
    return OutputSpec(task=task, postprocess="probabilities",  # type: ignore[arg-type]
                      label_output=out_names[0], probability_output=out_names[1],
                      classes=list(range(n_classes)), names=out_names)


class BoosterFamily(Family):
    """A raw Booster: XGBoost's is handed to the sklearn family as its estimator; LightGBM's
    is converted here with ``onnxmltools.convert_lightgbm``."""

    title = "a LightGBM Booster"

    def resolve(self, model: Any) -> tuple[Family, Any]:
        root = type(model).__module__.split(".", 1)[0]
        if root == "xgboost":
            return SKLEARN, xgboost_estimator(model)
        if root != "lightgbm":
            raise UnsupportedModelError(f"not a booster packserve knows: {type(model).__name__}")
        return self, model

    def check(self, model: Any, options: Mapping[str, Any]) -> None:
        try:
            import onnxmltools  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError("onnxmltools", "lightgbm") from exc
        lightgbm_task(model)  # refuses ranking objectives

    def read_sample(self, model: Any, sample: Any, feature_names: list[str] | None) -> SampleTable:
        names = feature_names
        if names is None:
            model_names = [str(n) for n in model.feature_name()]
            if model_names != [f"Column_{i}" for i in range(len(model_names))]:
                names = model_names
        st = sample_table(sample, feature_names=names, expected_width=model.num_feature())
        if not st.all_numeric:
            raise UnsupportedModelError("a LightGBM Booster is packed with numeric features only")
        return st

    def native(self, model: Any, sample: SampleTable) -> parity.NativeOutput:
        return _lightgbm_native(model, sample.table, lightgbm_task(model)[0])

    def export(self, job: ExportJob) -> Export:
        import onnxmltools
        from onnxmltools.convert.common.data_types import FloatTensorType

        task, n_classes = lightgbm_task(job.model)
        n = len(job.sample.features)
        with converter_errors("onnxmltools could not convert the LightGBM Booster"):
            onx = onnxmltools.convert_lightgbm(
                job.model, initial_types=[("input", FloatTensorType([None, n]))],
                zipmap=False, target_opset=LIGHTGBM_OPSET,
            )
        opsets = write_onnx(job.staging, onx)
        return Export(
            artifact="model.onnx",
            inputs=[TensorSpec(name="input", dtype="float32", shape=[None, n],
                               features=job.sample.names)],
            outputs=_outputs(onx, task, n_classes),
            framework="lightgbm",
            framework_version=dist_version("lightgbm"),
            model_type="lightgbm.basic.Booster",
            converters={d: dist_version(d) for d in ("onnxmltools", "onnx")},
            opsets=opsets,
            export={"input_precision": "float32",
                    "target_opset": {"": LIGHTGBM_OPSET, "ai.onnx.ml": LIGHTGBM_ML_OPSET},
                    "zipmap": False},
            notes=["raw LightGBM Booster: classes are the booster's class indices 0..k-1"]
            if task != "regression" else [],
            failure_hint=FLOAT32_HINT,
        )


FAMILY = BoosterFamily()

__all__ = ["FAMILY", "BoosterFamily", "lightgbm_task", "xgboost_estimator", "xgboost_objective"]

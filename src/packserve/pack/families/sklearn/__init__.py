"""scikit-learn estimators and Pipelines (and XGBoost / LightGBM sklearn-API estimators) -> ONNX.

:mod:`.family` is the :class:`~packserve.pack.family.Family` (skl2onnx conversion, float32 then
float64 inputs); :mod:`.kinds` reads the estimator kinds served with named outputs (clusterers,
transformers, outlier detectors); :mod:`.converters` registers the XGBoost / LightGBM converters
with skl2onnx; :mod:`.compat` holds the scoped workarounds for converter bugs.
"""

from __future__ import annotations

from packserve.pack.families.sklearn.family import (
    FAMILY,
    FLOAT32_HINT,
    TARGET_OPSET,
    SklearnFamily,
    final_estimator,
    is_classifier,
)

__all__ = ["FAMILY", "FLOAT32_HINT", "TARGET_OPSET", "SklearnFamily", "final_estimator",
           "is_classifier"]

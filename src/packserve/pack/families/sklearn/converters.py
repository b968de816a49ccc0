"""XGBoost / LightGBM estimators made known to skl2onnx (through onnxmltools' converters).

skl2onnx does not know XGBoost and LightGBM estimators out of the box: their onnxmltools
converters are registered first (the step a bare ``convert_sklearn`` call skips, and fails
on). Registering them with skl2onnx — rather than calling onnxmltools directly — is what
lets the same code pack a Pipeline that *ends* in a booster.
"""

from __future__ import annotations

from typing import Any

from packserve.errors import MissingDependencyError

BOOSTERS = ("xgboost", "lightgbm")
_registered = False


def require(fam: str) -> None:
    """skl2onnx for every model; onnxmltools too when a booster does the predicting."""
    try:
        import skl2onnx  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("skl2onnx", fam) from exc
    if fam in BOOSTERS:
        try:
            import onnxmltools  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError("onnxmltools", fam) from exc


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


def xgb_without_names(est: Any) -> Any:
    """XGBoost fitted on a DataFrame dumps trees with its column names; onnxmltools only
    parses ``f<i>`` names. Return an equivalent estimator whose booster has no names."""
    booster = est.get_booster()
    names = booster.feature_names
    if not names or all(n == f"f{i}" for i, n in enumerate(names)):
        return est
    raw = booster.copy()
    raw.feature_names = None
    raw.feature_types = None
    clone = type(est)(**est.get_params())
    clone.load_model(bytearray(raw.save_raw("ubj")))
    return clone


__all__ = ["BOOSTERS", "register_booster_converters", "require", "xgb_without_names"]

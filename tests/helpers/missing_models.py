"""Models trained on data with missing values (issue #19), built once per session.

Six numeric features, ~20% of the cells NaN (training and sample), so every tree ensemble
learns a missing-value direction and the imputer pipeline really imputes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

FEATURES = ["age", "income", "debt", "score", "tenure", "visits"]
MISSING_FRACTION = 0.2


@dataclass(frozen=True)
class MissingData:
    x_train: np.ndarray
    y_train: np.ndarray
    yr_train: np.ndarray
    x_test: np.ndarray  # with NaN holes: what parity and serving are checked on

    def frame(self, x: np.ndarray) -> Any:
        import pandas as pd

        return pd.DataFrame(x, columns=FEATURES)


def missing_data(seed: int = 0) -> MissingData:
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=900, n_features=6, n_informative=4, random_state=seed)
    rng = np.random.default_rng(seed)
    yr = x @ rng.normal(size=6) * 10 + 50.0
    x = x.copy()
    x[rng.random(x.shape) < MISSING_FRACTION] = np.nan
    # the target depends on missingness too, so a wrong missing branch shows up in parity
    y = np.where(np.isnan(x[:, 1]), 1, y)
    yr = np.where(np.isnan(x[:, 2]), yr + 25.0, yr)
    return MissingData(x[:700], y[:700], yr[:700], x[700:])


def _xgb() -> Any:
    from xgboost import XGBClassifier

    return XGBClassifier(n_estimators=30, max_depth=4, n_jobs=1, random_state=0)


def _lgbm() -> Any:
    from lightgbm import LGBMRegressor

    return LGBMRegressor(n_estimators=30, num_leaves=15, n_jobs=1, verbose=-1, random_state=0)


def _catboost() -> Any:
    from catboost import CatBoostClassifier

    return CatBoostClassifier(iterations=30, depth=4, verbose=0, thread_count=1, random_seed=0)


def _hgb() -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=30, random_state=0)


def _imputer() -> Any:
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), Ridge())


# name -> (factory, is_classifier)
MODELS: dict[str, tuple[Callable[[], Any], bool]] = {
    "xgboost": (_xgb, True),
    "lightgbm": (_lgbm, False),
    "catboost": (_catboost, True),
    "hgb": (_hgb, True),
    "imputer": (_imputer, False),
}


def fit(name: str, data: MissingData) -> Any:
    make, clf = MODELS[name]
    return make().fit(data.frame(data.x_train), data.y_train if clf else data.yr_train)


def native_predict(model: Any, x: Any, classifier: bool) -> np.ndarray:
    return np.asarray(model.predict_proba(x) if classifier else model.predict(x), dtype=np.float64)

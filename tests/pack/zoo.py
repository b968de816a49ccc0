"""Tiny models for the pack tests (the ``zoo`` fixture in conftest.py serves them).

Models are built lazily by key, so a run that selects one test file only trains what it
uses. Every dataset has a disjoint held-out split: packing uses the first rows of it as
``sample``; the tests check parity on *all* held-out rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Case:
    model: Any
    x_train: Any
    x_test: Any  # held-out rows: sample = x_test[:SAMPLE_ROWS], parity checked on all of them
    kind: str  # "classifier" | "regressor"

    @property
    def sample(self) -> Any:
        return self.x_test[:SAMPLE_ROWS]


SAMPLE_ROWS = 80


def _split(x: Any, y: Any) -> tuple[Any, Any, Any, Any]:
    n = int(len(x) * 0.6)
    return x[:n], x[n:], y[:n], y[n:]


def _data(kind: str, seed: int = 0) -> tuple[Any, Any, Any, Any]:
    from sklearn.datasets import make_classification, make_regression

    if kind == "binary":
        x, y = make_classification(n_samples=500, n_features=8, n_informative=5, random_state=seed)
    elif kind == "multiclass":
        x, y = make_classification(
            n_samples=500, n_features=8, n_informative=5, n_classes=3, random_state=seed
        )
    else:
        x, y = make_regression(n_samples=500, n_features=8, noise=5.0, random_state=seed)
        y = y + 300.0  # mean |y| well away from 0, so the relative tolerance means something
    return _split(x, y)


def _fit(kind: str, data: str, make: Callable[[], Any]) -> Case:
    xtr, xte, ytr, _ = _data(data)
    return Case(make().fit(xtr, ytr), xtr, xte, kind)


def _lgb_booster(data: str) -> Case:
    import lightgbm as lgb

    xtr, xte, ytr, _ = _data(data)
    params: dict[str, Any] = {"verbose": -1, "num_threads": 1, "seed": 0}
    params.update(
        {"binary": {"objective": "binary"},
         "multiclass": {"objective": "multiclass", "num_class": 3},
         "regression": {"objective": "regression"}}[data]
    )
    model = lgb.train(params, lgb.Dataset(xtr, ytr), num_boost_round=20)
    return Case(model, xtr, xte, "regressor" if data == "regression" else "classifier")


def _xgb_booster(data: str) -> Case:
    import xgboost as xgb

    xtr, xte, ytr, _ = _data(data)
    params = {"binary": {"objective": "binary:logistic"},
              "regression": {"objective": "reg:squarederror"}}[data]
    model = xgb.train({**params, "nthread": 1}, xgb.DMatrix(xtr, ytr), num_boost_round=20)
    return Case(model, xtr, xte, "regressor" if data == "regression" else "classifier")


def _builders() -> dict[str, Callable[[], Case]]:
    from catboost import CatBoostClassifier, CatBoostRegressor
    from lightgbm import LGBMClassifier, LGBMRegressor
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from xgboost import XGBClassifier, XGBRegressor

    cb = {"iterations": 30, "depth": 4, "verbose": 0, "thread_count": 1, "random_seed": 0}
    xg = {"n_estimators": 20, "max_depth": 4, "n_jobs": 1, "random_state": 0}
    lg = {"n_estimators": 20, "num_leaves": 15, "n_jobs": 1, "random_state": 0, "verbose": -1}
    return {
        "sklearn-logreg-binary": lambda: _fit("classifier", "binary", lambda: make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=500))),
        "sklearn-rf-multiclass": lambda: _fit("classifier", "multiclass", lambda: (
            RandomForestClassifier(n_estimators=15, max_depth=6, random_state=0, n_jobs=1))),
        "sklearn-rf-regressor": lambda: _fit("regressor", "regression", lambda: (
            RandomForestRegressor(n_estimators=15, max_depth=6, random_state=0, n_jobs=1))),
        "sklearn-ridge-regressor": lambda: _fit("regressor", "regression", lambda: make_pipeline(
            StandardScaler(), Ridge())),
        "sklearn-hgb-binary": lambda: _fit("classifier", "binary", lambda: (
            HistGradientBoostingClassifier(max_iter=20, random_state=0))),
        "sklearn-hgb-multiclass": lambda: _fit("classifier", "multiclass", lambda: (
            HistGradientBoostingClassifier(max_iter=20, random_state=0))),
        "sklearn-hgb-regressor": lambda: _fit("regressor", "regression", lambda: (
            HistGradientBoostingRegressor(max_iter=20, random_state=0))),
        "xgboost-binary": lambda: _fit("classifier", "binary", lambda: XGBClassifier(**xg)),
        "xgboost-multiclass": lambda: _fit("classifier", "multiclass", lambda: XGBClassifier(**xg)),
        "xgboost-regressor": lambda: _fit("regressor", "regression", lambda: XGBRegressor(**xg)),
        "xgboost-booster-binary": lambda: _xgb_booster("binary"),
        "xgboost-booster-regressor": lambda: _xgb_booster("regression"),
        "lightgbm-binary": lambda: _fit("classifier", "binary", lambda: LGBMClassifier(**lg)),
        "lightgbm-multiclass": lambda: _fit("classifier", "multiclass", lambda: LGBMClassifier(**lg)),
        "lightgbm-regressor": lambda: _fit("regressor", "regression", lambda: LGBMRegressor(**lg)),
        "lightgbm-booster-binary": lambda: _lgb_booster("binary"),
        "lightgbm-booster-multiclass": lambda: _lgb_booster("multiclass"),
        "lightgbm-booster-regressor": lambda: _lgb_booster("regression"),
        "catboost-binary": lambda: _fit("classifier", "binary", lambda: CatBoostClassifier(**cb)),
        "catboost-multiclass": lambda: _fit("classifier", "multiclass", lambda: (
            CatBoostClassifier(**cb))),
        "catboost-regressor": lambda: _fit("regressor", "regression", lambda: (
            CatBoostRegressor(**cb))),
    }


ZOO_KEYS = [
    "sklearn-logreg-binary", "sklearn-rf-multiclass", "sklearn-rf-regressor",
    "sklearn-ridge-regressor", "sklearn-hgb-binary", "sklearn-hgb-multiclass",
    "sklearn-hgb-regressor", "xgboost-binary", "xgboost-multiclass", "xgboost-regressor",
    "xgboost-booster-binary", "xgboost-booster-regressor", "lightgbm-binary",
    "lightgbm-multiclass", "lightgbm-regressor", "lightgbm-booster-binary",
    "lightgbm-booster-multiclass", "lightgbm-booster-regressor", "catboost-binary",
    "catboost-multiclass", "catboost-regressor",
]


class Zoo:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._cases: dict[str, Case] = {}
        self._bundles: dict[str, Path] = {}
        self._builders = _builders()

    def case(self, key: str) -> Case:
        if key not in self._cases:
            self._cases[key] = self._builders[key]()
        return self._cases[key]

    def bundle(self, key: str) -> Path:
        """The case packed once (sample = first held-out rows)."""
        if key not in self._bundles:
            import packserve

            case = self.case(key)
            res = packserve.pack(case.model, self.root / key, sample=case.sample, name=key)
            self._bundles[key] = res.path
        return self._bundles[key]


def native_predictions(case: Case, x: Any) -> dict[str, np.ndarray]:
    """What the native model predicts for ``x``: labels+probabilities, or values."""
    model = case.model
    name = type(model).__name__
    if name == "Booster" and type(model).__module__.startswith("xgboost"):
        import xgboost as xgb

        raw = np.asarray(model.predict(xgb.DMatrix(x)), dtype=np.float64)
    elif name == "Booster":
        raw = np.asarray(model.predict(x), dtype=np.float64)
    else:
        if case.kind == "classifier":
            return {"labels": np.asarray(model.predict(x)).reshape(-1),
                    "probabilities": np.asarray(model.predict_proba(x))}
        return {"values": np.asarray(model.predict(x), dtype=np.float64)}
    if case.kind == "regressor":
        return {"values": raw}
    probs = np.stack([1 - raw, raw], axis=1) if raw.ndim == 1 else raw
    return {"labels": probs.argmax(axis=1), "probabilities": probs}

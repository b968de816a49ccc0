"""Session-wide fixtures: tiny models and bundles, built once per test session.

Layer-specific fixtures live in each ``tests/<layer>/conftest.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest


@dataclass(frozen=True)
class Data:
    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray


@pytest.fixture(scope="session")
def chapter_data() -> Data:
    """The chapter's dataset: make_classification(5000, 15 features, 10 informative)."""
    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split

    x, y = make_classification(
        n_samples=5000, n_features=15, n_informative=10, random_state=42
    )
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=42)
    return Data(xtr, xte, ytr, yte)


@pytest.fixture(scope="session")
def chapter_model(chapter_data: Data):  # type: ignore[no-untyped-def]
    """The chapter's XGBClassifier (smaller: 30 trees keeps the session fast)."""
    from xgboost import XGBClassifier

    return XGBClassifier(
        n_estimators=30, max_depth=6, learning_rate=0.1, random_state=42,
        eval_metric="logloss", n_jobs=1,
    ).fit(chapter_data.x_train, chapter_data.y_train)


@pytest.fixture(scope="session")
def bundles_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bundles")


@pytest.fixture(scope="session")
def chapter_bundle(chapter_model, chapter_data: Data, bundles_dir: Path) -> Path:  # type: ignore[no-untyped-def]
    """A packed bundle of the chapter model, named 'fraud', version 1.0.0."""
    import packserve

    res = packserve.pack(
        chapter_model, bundles_dir / "fraud", sample=chapter_data.x_test[:200], name="fraud"
    )
    return res.path


@pytest.fixture(scope="session")
def iris_string_bundle(bundles_dir: Path) -> Path:
    """A multiclass LogisticRegression with *string* labels, named 'iris'."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    import packserve

    data = load_iris()
    labels = np.asarray(data.target_names)[data.target]
    model = LogisticRegression(max_iter=500).fit(data.data, labels)
    res = packserve.pack(
        model, bundles_dir / "iris", sample=data.data[::5], name="iris",
        feature_names=["sepal_length", "sepal_width", "petal_length", "petal_width"],
    )
    return res.path


@pytest.fixture(scope="session")
def regressor_bundle(chapter_data: Data, bundles_dir: Path) -> Path:
    """A small RandomForestRegressor named 'price'."""
    from sklearn.ensemble import RandomForestRegressor

    import packserve

    x = chapter_data.x_train
    y = 3.0 * x[:, 0] - 2.0 * x[:, 1] + 10.0
    model = RandomForestRegressor(n_estimators=10, max_depth=6, random_state=0, n_jobs=1).fit(x, y)
    res = packserve.pack(model, bundles_dir / "price", sample=chapter_data.x_test[:200], name="price")
    return res.path


@pytest.fixture(scope="session")
def two_input_bundle(bundles_dir: Path) -> Path:
    """A tensor bundle (issue #16): int64 tokens [N, seq] + float32 image [N, 3, 4, 4] -> two
    named outputs, task='tensor' (see tests/helpers/tensor_bundles.py)."""
    from helpers.tensor_bundles import write_two_input

    return write_two_input(bundles_dir / "two_input")


@pytest.fixture(scope="session")
def image_clf_bundle(bundles_dir: Path) -> Path:
    """A tensor-input classifier: float32 image [N, 3, 4, 4] -> 3 classes (string labels)."""
    from helpers.tensor_bundles import write_classifier

    return write_classifier(bundles_dir / "image_clf")

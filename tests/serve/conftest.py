"""Serve-layer fixtures: a string-feature pipeline, a deliberately slow ONNX model, repositories."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers.models import make_slow_bundle
from helpers.server import ENGINES


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test once per HTTP engine (``PACKSERVE_SERVER``, read by every ``packserve
    serve`` the test starts): the same real-server test proves a guarantee for both."""
    monkeypatch.setenv("PACKSERVE_SERVER", request.param)
    return str(request.param)


@pytest.fixture(scope="session")
def credit_bundle(bundles_dir: Path) -> Path:
    """ColumnTransformer pipeline: numeric 'age', 'income' + string 'city'; labels 'no'/'yes'."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    import packserve

    rng = np.random.default_rng(0)
    n = 300
    df = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n).astype(float),
            "income": rng.normal(50, 10, n),
            "city": rng.choice(["paris", "lyon", "nice"], n),
        }
    )
    y = np.where((df.income > 50) & (df.city != "nice"), "yes", "no")
    pipe = Pipeline(
        [
            ("ct", ColumnTransformer([
                ("num", StandardScaler(), ["age", "income"]),
                ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"]),
            ])),
            ("lr", LogisticRegression()),
        ]
    ).fit(df, y)
    return packserve.pack(pipe, bundles_dir / "credit", sample=df.iloc[:50], name="credit").path


@pytest.fixture(scope="session")
def slow_bundle(bundles_dir: Path) -> Path:
    return make_slow_bundle(bundles_dir / "slow")


@pytest.fixture(scope="session")
def repo_dir(tmp_path_factory: pytest.TempPathFactory, chapter_bundle: Path, iris_string_bundle: Path,
             regressor_bundle: Path, credit_bundle: Path) -> Path:
    """REPO/<name>/<version>/: fraud 1.0.0 and 2.0.0, iris, price, credit."""
    repo = tmp_path_factory.mktemp("repo")
    shutil.copytree(chapter_bundle, repo / "fraud" / "1.0.0")
    shutil.copytree(chapter_bundle, repo / "fraud" / "2.0.0")
    shutil.copytree(iris_string_bundle, repo / "iris" / "1")
    shutil.copytree(regressor_bundle, repo / "price" / "1")
    shutil.copytree(credit_bundle, repo / "credit" / "1")
    return repo

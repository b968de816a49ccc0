"""Missing values end to end at pack time (issue #19): measured, recorded, refused where wrong."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest

import packserve
from helpers.missing_models import FEATURES, MODELS, MissingData, fit, missing_data, native_predict
from packserve.errors import InputError, ParityError, SampleError


@pytest.fixture(scope="session")
def mdata() -> MissingData:
    return missing_data()


@pytest.fixture(scope="session")
def fitted(mdata: MissingData) -> dict[str, Any]:
    return {name: fit(name, mdata) for name in MODELS}


def _close(want: np.ndarray, got: np.ndarray, classifier: bool) -> None:
    got = got.reshape(want.shape)
    if classifier:
        assert np.abs(want - got).max() <= 1e-5
    else:
        assert np.abs(want - got).max() <= 1e-5 * np.abs(want).mean()


@pytest.mark.parametrize("name", list(MODELS))
def test_packed_from_object_accepts_missing_with_parity(name, fitted, mdata, tmp_path) -> None:
    model, clf = fitted[name], MODELS[name][1]
    sample = mdata.frame(mdata.x_test[:80])
    assert sample.isna().to_numpy().any()  # the sample's own rows have gaps
    res = packserve.pack(model, tmp_path / name, sample=sample)
    m = res.manifest
    assert m.parity.passed and m.missing_values == "all"
    assert all(f.allow_missing for f in m.features)
    check = next(c for c in m.parity.checks if c["check"] == "missing values")
    assert check["rows"] >= len(FEATURES) and check["features_allowed"] == FEATURES
    assert check["max_abs_diff"] <= check["tolerance"]
    # held-out rows with holes, plus every row with one more value removed
    held = mdata.x_test[80:]
    holes = np.concatenate([np.where(np.arange(6) == j, np.nan, held[:20]) for j in range(6)])
    rows = np.concatenate([held, holes])
    pred = packserve.load(res.path).predict(rows)
    got = pred.probabilities if clf else pred.values
    assert got is not None
    _close(native_predict(model, mdata.frame(rows), clf), got, clf)


@pytest.mark.parametrize("name, suffix", [("xgboost", "json"), ("lightgbm", "txt"),
                                          ("catboost", "cbm")])
def test_native_file_and_csv_with_empty_cells(name, suffix, fitted, mdata, tmp_path) -> None:
    model, clf = fitted[name], MODELS[name][1]
    path = tmp_path / f"model.{suffix}"
    if name == "lightgbm":
        model.booster_.save_model(str(path))
    else:
        model.save_model(str(path))
    csv = tmp_path / "holdout.csv"
    mdata.frame(mdata.x_test[:60]).to_csv(csv)  # plain to_csv(): index column, empty cells
    assert ",," in csv.read_text()
    proc = subprocess.run(
        [sys.executable, "-m", "packserve", "pack", str(path), str(tmp_path / "b"),
         "--sample", str(csv)], capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    bundle = packserve.load(tmp_path / "b")
    assert bundle.manifest.missing_values == "all"
    assert bundle.manifest.feature_names == FEATURES
    pred = bundle.predict(mdata.x_test)
    got = pred.probabilities if clf else pred.values
    assert got is not None
    _close(native_predict(model, mdata.frame(mdata.x_test), clf), got, clf)


def test_model_without_missing_support(mdata, tmp_path) -> None:
    from sklearn.linear_model import LogisticRegression

    clean = np.nan_to_num(mdata.x_train)
    model = LogisticRegression().fit(clean, mdata.y_train)
    res = packserve.pack(model, tmp_path / "lr", sample=clean[:50])
    m = res.manifest
    assert m.missing_values == "none" and not any(f.allow_missing for f in m.features)
    check = next(c for c in m.parity.checks if c["check"] == "missing values")
    assert check["native_refuses"] == [f"f{i}" for i in range(6)]
    row = clean[:1].copy()
    row[0, 3] = np.nan
    with pytest.raises(InputError, match="does not accept missing values") as info:
        packserve.load(res.path).predict(row)
    assert "feature 'f3'" in info.value.where
    with pytest.raises(SampleError, match="does not accept missing values") as err:
        packserve.pack(model, tmp_path / "lr2", sample=mdata.x_test[:50])
    assert "feature 'f" in err.value.message


def test_infinity_is_refused_even_where_missing_is_allowed(fitted, mdata, tmp_path) -> None:
    res = packserve.pack(fitted["hgb"], tmp_path / "h", sample=mdata.frame(mdata.x_test[:40]))
    row = np.nan_to_num(mdata.x_test[:1])
    row[0, 2] = np.inf
    with pytest.raises(InputError, match="infinite"):
        packserve.load(res.path).predict(row)


def test_converter_that_gets_missing_values_wrong(mdata, tmp_path) -> None:
    """scikit-learn's own trees learn a side for NaN; skl2onnx ignores it. With a complete
    sample the bundle is written with missing values refused (and says why); with gaps in
    the sample it is refused."""
    from sklearn.tree import DecisionTreeClassifier

    model = DecisionTreeClassifier(max_depth=6, random_state=0).fit(mdata.x_train, mdata.y_train)
    complete = mdata.x_test[~np.isnan(mdata.x_test).any(axis=1)][:60]
    res = packserve.pack(model, tmp_path / "dt", sample=complete)
    m = res.manifest
    check = next(c for c in m.parity.checks if c["check"] == "missing values")
    assert check["artifact_wrong"], check
    wrong = set(check["artifact_wrong"])
    assert {f.name for f in m.features if not f.allow_missing} >= wrong
    assert any("handles them differently" in n for n in m.notes)
    with pytest.raises(ParityError, match="rows with missing values"):
        packserve.pack(model, tmp_path / "dt2", sample=mdata.x_test[:80])


def test_knn_imputer_pipeline_packs_with_the_opset_its_converter_needs(mdata, tmp_path) -> None:
    from sklearn.impute import KNNImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(KNNImputer(), LogisticRegression()).fit(mdata.x_train, mdata.y_train)
    res = packserve.pack(model, tmp_path / "knn", sample=mdata.x_test[:40])
    assert res.manifest.missing_values == "all" and res.manifest.opsets[""] == 18
    assert any("opset 18" in w for w in res.manifest.export["workarounds"])
    pred = packserve.load(res.path).predict(mdata.x_test)
    assert pred.probabilities is not None
    _close(model.predict_proba(mdata.x_test), pred.probabilities, True)

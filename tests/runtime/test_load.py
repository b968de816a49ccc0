from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import packserve
from packserve.errors import InputError, IntegrityError


def test_predict_matches_native(chapter_bundle: Path, chapter_model, chapter_data) -> None:
    pred = packserve.load(chapter_bundle).predict(chapter_data.x_test)
    assert (pred.labels == chapter_model.predict(chapter_data.x_test)).all()
    assert np.abs(pred.probabilities - chapter_model.predict_proba(chapter_data.x_test)).max() <= 1e-5
    assert pred.classes == [0, 1]
    assert pred.labels.dtype.kind == "i"


def test_accepts_lists_mappings_and_dataframes(chapter_bundle: Path, chapter_data) -> None:
    import pandas as pd

    p = packserve.load(chapter_bundle)
    rows = chapter_data.x_test[:4]
    names = p.manifest.feature_names
    ref = p.predict(rows).probabilities
    assert np.allclose(p.predict(rows.tolist()).probabilities, ref)
    assert np.allclose(p.predict([dict(zip(names, r)) for r in rows]).probabilities, ref)
    assert np.allclose(p.predict(pd.DataFrame(rows, columns=names)).probabilities, ref)


def test_string_labels_stay_strings(iris_string_bundle: Path) -> None:
    p = packserve.load(iris_string_bundle)
    pred = p.predict([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
    assert pred.labels.tolist() == ["setosa", "virginica"]
    assert pred.classes == ["setosa", "versicolor", "virginica"]


@pytest.mark.parametrize(
    "rows, where",
    [
        ([[1.0] * 14], "rows"),
        ([[float("-inf")] + [0.0] * 14], "row 0"),
        ([[0.0] * 14 + [float("inf")]], "row 0"),
        ([[1e39] + [0.0] * 14], "row 0"),
        ([], "rows"),
        ([["a"] * 15], "rows"),
    ],
)
def test_bad_rows_raise_input_error(chapter_bundle: Path, rows, where: str) -> None:
    p = packserve.load(chapter_bundle)
    with pytest.raises(InputError) as info:
        p.predict(rows)
    assert (info.value.where or "").startswith(where)


def test_missing_values_follow_the_manifest(chapter_bundle: Path) -> None:
    """XGBoost takes missing values (measured at pack time): NaN is predicted, not refused."""
    p = packserve.load(chapter_bundle)
    assert p.manifest.missing_values == "all"
    pred = p.predict([[float("nan")] + [0.0] * 14])
    assert pred.probabilities is not None and np.isfinite(pred.probabilities).all()


def test_tampered_artifact_is_refused_before_loading(chapter_bundle: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(chapter_bundle, bad)
    data = bytearray((bad / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256"):
        packserve.load(bad)


def test_missing_artifact_is_refused(chapter_bundle: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(chapter_bundle, bad)
    (bad / "model.onnx").unlink()
    with pytest.raises(IntegrityError, match="missing"):
        packserve.load(bad)

"""Native model files: detection by content, loading, and refusal of pickles unopened."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from zoo import Zoo, native_predictions

import packserve
from packserve.errors import PackError, SampleError, UnsafeFileError, UnsupportedModelError
from packserve.pack import files


@pytest.fixture(scope="module")
def model_files(zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("model-files")
    out = {
        "xgb.json": d / "xgb.json", "xgb.ubj": d / "xgb.ubj", "reg.json": d / "reg.json",
        "lgb.txt": d / "lgb.txt", "lgbreg.txt": d / "lgbreg.txt",
        "cb.cbm": d / "cb.cbm", "cbreg.cbm": d / "cbreg.cbm",
    }
    zoo.case("xgboost-binary").model.save_model(out["xgb.json"])
    zoo.case("xgboost-binary").model.save_model(out["xgb.ubj"])
    zoo.case("xgboost-regressor").model.save_model(out["reg.json"])
    zoo.case("lightgbm-binary").model.booster_.save_model(str(out["lgb.txt"]))
    zoo.case("lightgbm-booster-regressor").model.save_model(str(out["lgbreg.txt"]))
    zoo.case("catboost-multiclass").model.save_model(str(out["cb.cbm"]))
    zoo.case("catboost-regressor").model.save_model(str(out["cbreg.cbm"]))
    return out


@pytest.mark.parametrize(
    "name, fmt",
    [("xgb.json", files.XGBOOST_JSON), ("xgb.ubj", files.XGBOOST_UBJ),
     ("lgb.txt", files.LIGHTGBM_TEXT), ("cb.cbm", files.CATBOOST_CBM)],
)
def test_detects_native_formats_by_content(model_files, name: str, fmt: str, tmp_path) -> None:
    assert files.detect_format(model_files[name]) == fmt
    renamed = tmp_path / "model.bin"  # the extension is not what decides
    renamed.write_bytes(model_files[name].read_bytes())
    assert files.detect_format(renamed) == fmt


@pytest.mark.parametrize(
    "name, key",
    [("xgb.json", "xgboost-binary"), ("xgb.ubj", "xgboost-binary"),
     ("reg.json", "xgboost-regressor"), ("lgb.txt", "lightgbm-binary"),
     ("lgbreg.txt", "lightgbm-booster-regressor"), ("cb.cbm", "catboost-multiclass"),
     ("cbreg.cbm", "catboost-regressor")],
)
def test_loaded_files_pack_with_parity(zoo: Zoo, model_files, name: str, key: str, tmp_path) -> None:
    case = zoo.case(key)
    model = files.load_model_file(model_files[name])
    res = packserve.pack(model, tmp_path / "b", sample=case.sample)
    assert res.manifest.parity.passed
    pred = packserve.load(res.path).predict(case.x_test)
    want = native_predictions(case, case.x_test)
    if "labels" in want:
        assert pred.labels.tolist() == want["labels"].tolist()
        assert np.abs(pred.probabilities - want["probabilities"]).max() <= 1e-5
    else:
        tol = 1e-5 * float(np.mean(np.abs(want["values"])))
        assert np.abs(pred.values - want["values"]).max() <= tol


class _Boom:
    """Unpickling this creates a marker file: proof of whether a pickle was executed."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (Path(self.marker),))


@pytest.mark.parametrize("suffix", [".pkl", ".joblib", ".bin", ".json"])
def test_pickles_are_refused_without_being_loaded(tmp_path, suffix: str) -> None:
    marker = tmp_path / "executed"
    path = tmp_path / f"model{suffix}"
    path.write_bytes(pickle.dumps(_Boom(str(marker)), protocol=4))
    assert files.detect_format(path) == files.PICKLE
    # Safe migration: the scanner flags the global before anything is unpickled.
    with pytest.raises(UnsafeFileError, match="refusing to load"):
        files.load_model_file(path)
    assert not marker.exists()


def test_compressed_joblib_and_torch_zip_are_pickles(tmp_path) -> None:
    import joblib

    jl = tmp_path / "m.joblib"
    joblib.dump({"a": np.arange(3)}, jl, compress=3)
    assert files.detect_format(jl) == files.PICKLE
    pt = tmp_path / "m.pt"
    with zipfile.ZipFile(pt, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"a": 1}))
    assert files.detect_format(pt) == files.PICKLE
    with pytest.raises(UnsupportedModelError, match="pickle"):
        files.load_model_file(pt)


def test_unknown_and_missing_files(tmp_path) -> None:
    junk = tmp_path / "model.dat"
    junk.write_bytes(b"hello world")
    with pytest.raises(UnsupportedModelError, match="XGBoost .json/.ubj, LightGBM .txt, CatBoost .cbm"):
        files.load_model_file(junk)
    with pytest.raises(PackError, match="does not exist"):
        files.load_model_file(tmp_path / "nope.json")
    corrupt = tmp_path / "broken.json"
    corrupt.write_text('{"learner": {"oops": ')
    with pytest.raises(PackError, match="could not read '") as info:
        files.load_model_file(corrupt)
    assert f"'{corrupt}'" in info.value.message  # the path as given (issue #21), not its last part


def test_csv_sample_with_and_without_header(tmp_path) -> None:
    p = tmp_path / "s.csv"
    p.write_text("a,b\n1,2\n3,4.5\n")
    s = files.load_sample_file(p)
    assert s.header == ["a", "b"] and s.table.tolist() == [[1, 2], [3, 4.5]]
    p.write_text("1,2\n3,4.5\n")
    s = files.load_sample_file(p)
    assert s.header is None and s.table.shape == (2, 2)


@pytest.mark.parametrize(
    "content, match",
    [("1,2\n1,x\n", "non-numeric value 'x' in column 1; a sample with string"),
     ("a,b\n1,2,3\n", "3 columns, not 2"), ("", "empty"), ("a,b\n", "no rows")],
)
def test_bad_csv_sample(tmp_path, content: str, match: str) -> None:
    p = tmp_path / "s.csv"
    p.write_text(content)
    with pytest.raises(SampleError, match=match):
        files.load_sample_file(p)


def test_npy_sample_is_loaded_without_pickle(tmp_path) -> None:
    good = tmp_path / "s.npy"
    np.save(good, np.arange(6.0).reshape(2, 3))
    assert files.load_sample_file(good).table.shape == (2, 3)
    bad = tmp_path / "o.npy"
    np.save(bad, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(SampleError, match="pickle"):
        files.load_sample_file(bad)
    with pytest.raises(SampleError, match=".csv, .parquet or .npy"):
        files.load_sample_file(_touch(tmp_path / "s.xlsx"))


def _touch(p: Path) -> Path:
    p.write_bytes(b"x")
    return p


def test_align_sample_reorders_by_model_names(tmp_path) -> None:
    import pandas as pd
    from xgboost import XGBClassifier

    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(80, 3)), columns=["alpha", "beta", "gamma"])
    model = XGBClassifier(n_estimators=5, n_jobs=1).fit(df, (df.alpha > 0).astype(int))
    sample = files.SampleFile(table=df[["gamma", "alpha", "beta"]].to_numpy(),
                              header=["gamma", "alpha", "beta"])
    table, names = files.align_sample(sample, model)
    assert names == ["alpha", "beta", "gamma"]
    assert np.array_equal(table, df.to_numpy())
    with pytest.raises(SampleError, match="missing \\['gamma'\\]"):
        files.align_sample(files.SampleFile(table[:, :2], ["alpha", "beta"]), model)


def test_csv_with_string_columns_packs_a_column_transformer(tmp_path) -> None:
    """A pipeline with string categories, packed from the CLI's CSV path (DataFrame)."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"size": rng.normal(size=120), "color": rng.choice(["red", "blue"], 120)})
    model = Pipeline([
        ("prep", ColumnTransformer([("num", "passthrough", ["size"]),
                                    ("cat", OneHotEncoder(), ["color"])])),
        ("clf", LogisticRegression()),
    ]).fit(df, (df["size"] > 0) ^ (df.color == "red"))
    csv_path = tmp_path / "s.csv"
    df[["color", "size"]].to_csv(csv_path, index=False)  # other column order than fitted
    sample = files.load_sample_file(csv_path)
    assert sample.string_columns == (0,)
    frame, names = files.align_sample(sample, model)
    res = packserve.pack(model, tmp_path / "b", sample=frame, feature_names=names)
    assert [f.dtype for f in res.manifest.features] == ["float32", "string"]
    pred = packserve.load(res.path).predict(df)
    assert np.abs(pred.probabilities - model.predict_proba(df)).max() <= 1e-5

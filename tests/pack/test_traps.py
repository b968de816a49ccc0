"""Known parity traps, each with a test: float32 after a scaler, HistGradientBoosting under
protobuf 7, SVC labels that are not the argmax of probabilities, string categories."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import packserve
from packserve.errors import InputError, ParityError
from packserve.pack.families.sklearn import compat

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # SVC(probability=True)


@pytest.fixture(scope="module")
def large_magnitude() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features around 1e7 with spread 1e3: float32 keeps ~1 unit of precision there."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(900, 4)) * 1000.0 + 1e7
    y = (((x[:, 0] - 1e7) + (x[:, 1] - 1e7)) > 0).astype(int)
    return x[:600], x[600:], y[:600]


def test_scaler_before_tree_is_retried_in_float64(large_magnitude, tmp_path) -> None:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xtr, xte, ytr = large_magnitude
    model = make_pipeline(
        StandardScaler(), RandomForestClassifier(n_estimators=20, random_state=0, n_jobs=1)
    ).fit(xtr, ytr)
    # The trap is real: a float32 export of this model fails parity ...
    with pytest.raises(ParityError, match=r"max \|Δprobability\|"):
        packserve.pack(model, tmp_path / "f32", sample=xte, double=False)
    assert not (tmp_path / "f32").exists()
    # ... so the default pack retries in float64, says so, and really matches.
    res = packserve.pack(model, tmp_path / "auto", sample=xte)
    m = res.manifest
    assert m.export["input_precision"] == "float64"
    assert m.inputs[0].dtype == "float64"
    assert any("float32 export failed parity" in n for n in m.notes)
    pred = packserve.load(res.path).predict(xte)
    assert (pred.labels == model.predict(xte)).all()
    assert np.abs(pred.probabilities - model.predict_proba(xte)).max() <= 1e-5


def test_scaler_before_xgboost_casts_to_float32_before_the_booster(large_magnitude, tmp_path) -> None:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from xgboost import XGBClassifier

    xtr, xte, ytr = large_magnitude
    model = make_pipeline(
        StandardScaler(), XGBClassifier(n_estimators=20, max_depth=4, n_jobs=1)
    ).fit(xtr, ytr)
    res = packserve.pack(model, tmp_path / "b", sample=xte)
    assert res.manifest.export["input_precision"] == "float64"
    assert any("cast to float32 before XGBClassifier" in n for n in res.manifest.notes)
    ops = [n.op_type for n in onnx.load(str(res.path / "model.onnx")).graph.node]
    assert "Cast" in ops
    pred = packserve.load(res.path).predict(xte)
    assert (pred.labels == model.predict(xte)).all()
    assert np.abs(pred.probabilities - model.predict_proba(xte)).max() <= 1e-5


def test_bare_booster_float32_failure_is_reported_not_hidden(large_magnitude, tmp_path) -> None:
    """LightGBM compares in float64; ONNX trees read float32. Nothing to retry: refuse,
    say by how much, and write only on explicit override with the failure recorded."""
    from lightgbm import LGBMClassifier

    xtr, xte, ytr = large_magnitude
    model = LGBMClassifier(n_estimators=20, n_jobs=1, verbose=-1).fit(xtr, ytr)
    with pytest.raises(ParityError) as info:
        packserve.pack(model, tmp_path / "lgb", sample=xte)
    assert "max |Δprobability|" in info.value.message and "float32" in info.value.message
    assert info.value.report is not None and not info.value.report.passed
    assert not (tmp_path / "lgb").exists()
    assert not list(tmp_path.glob(".*packserve-tmp"))
    res = packserve.pack(model, tmp_path / "lgb", sample=xte, allow_parity_failure=True)
    assert res.manifest.parity.passed is False
    assert res.manifest.parity.max_abs_diff_probability > 1e-5
    assert any("WRITTEN DESPITE PARITY FAILURE" in n for n in res.manifest.notes)
    assert packserve.read_manifest(res.path).parity.passed is False


def test_hist_gradient_boosting_needs_and_gets_the_protobuf7_workaround(tmp_path) -> None:
    from google.protobuf import __version__ as protobuf_version
    from skl2onnx import convert_sklearn
    from skl2onnx.common import tree_ensemble
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import make_classification
    from sklearn.ensemble import HistGradientBoostingClassifier

    x, y = make_classification(n_samples=300, n_features=5, random_state=0)
    model = HistGradientBoostingClassifier(max_iter=5, random_state=0).fit(x[:200], y[:200])
    types = [("input", FloatTensorType([None, 5]))]
    if int(protobuf_version.split(".")[0]) >= 7:  # the bug the workaround exists for
        with pytest.raises(ValueError) as info:
            convert_sklearn(model, initial_types=types, options={"zipmap": False})
        assert "got a boolean" in str(info.value.__cause__)
    original = tree_ensemble.add_node
    res = packserve.pack(model, tmp_path / "hgb", sample=x[200:])
    assert tree_ensemble.add_node is original  # scoped: restored after the conversion
    assert res.manifest.export["workarounds"] == [compat.HIST_GB_BOOL_ATTRIBUTE]
    pred = packserve.load(res.path).predict(x[200:])
    assert (pred.labels == model.predict(x[200:])).all()


def test_hist_gradient_boosting_nan_routing_is_kept(tmp_path) -> None:
    """The workaround only touches leaves: learned NaN routing of splits survives."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 3))
    y = x[:, 0] * 3 + 100.0
    x[rng.random(x.shape) < 0.2] = np.nan
    y = np.where(np.isnan(x[:, 0]), 200.0, y)
    model = HistGradientBoostingRegressor(max_iter=20, random_state=0).fit(x, y)
    clean = np.nan_to_num(x[:100], nan=0.5)
    res = packserve.pack(model, tmp_path / "nan", sample=clean)
    sess = packserve.load(res.path)
    # NaN rows cannot go through Predictor validation (it rejects NaN), so run the raw graph.
    raw = sess._run_raw({"input": x[:100].astype(np.float32)})  # type: ignore[attr-defined]
    assert np.abs(raw[res.manifest.outputs.value_output].reshape(-1) - model.predict(x[:100])).max() < 1e-3


def test_svc_label_is_not_argmax_of_probabilities(tmp_path) -> None:
    from sklearn.datasets import make_classification
    from sklearn.svm import SVC

    x, y = make_classification(
        n_samples=300, n_features=5, n_informative=3, n_redundant=0, n_classes=3,
        n_clusters_per_class=1, random_state=4, flip_y=0.2,
    )
    model = SVC(probability=True, random_state=0).fit(x[:200], y[:200])
    xte = x[200:]
    native = model.predict(xte)
    argmax = model.classes_[model.predict_proba(xte).argmax(axis=1)]
    assert (native != argmax).any()  # the trap is present in these rows
    res = packserve.pack(model, tmp_path / "svc", sample=xte)
    assert res.manifest.outputs.label_output is not None
    pred = packserve.load(res.path).predict(xte)
    assert pred.labels.tolist() == native.tolist()
    assert np.abs(pred.probabilities - model.predict_proba(xte)).max() <= 1e-5


@pytest.fixture(scope="module")
def categorical_pipeline():
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    n = 400
    df = pd.DataFrame({
        "age": rng.integers(18, 80, n),
        "income": rng.normal(5e4, 1e4, n),
        "city": rng.choice(["paris", "berlin", "rome"], n),
        "plan": rng.choice(["basic", "pro"], n),
    })
    y = np.where((df.age > 40) ^ (df.city == "rome"), "churn", "stay")
    prep = ColumnTransformer([
        ("num", StandardScaler(), ["age", "income"]),
        ("cat", OneHotEncoder(handle_unknown="ignore"), ["city", "plan"]),
    ])
    model = Pipeline([("prep", prep), ("clf", RandomForestClassifier(
        n_estimators=15, max_depth=5, random_state=0, n_jobs=1))]).fit(df[:300], y[:300])
    return model, df


def test_string_categories_round_trip(categorical_pipeline, tmp_path) -> None:
    model, df = categorical_pipeline
    held_out = df[300:]
    res = packserve.pack(model, tmp_path / "churn", sample=held_out[:50])
    m = res.manifest
    assert [(t.name, t.dtype, t.shape) for t in m.inputs] == [
        ("age", m.inputs[0].dtype, [None, 1]), ("income", m.inputs[1].dtype, [None, 1]),
        ("city", "string", [None, 1]), ("plan", "string", [None, 1]),
    ]
    assert m.inputs[0].dtype in ("float32", "float64")
    assert [f.dtype for f in m.features][2:] == ["string", "string"]
    p = packserve.load(res.path)
    want = model.predict(held_out)
    by_frame = p.predict(held_out)
    assert by_frame.labels.tolist() == want.tolist()
    assert np.abs(by_frame.probabilities - model.predict_proba(held_out)).max() <= 1e-5
    records = held_out.to_dict(orient="records")
    lists = held_out.to_numpy(dtype=object).tolist()
    assert p.predict(records).labels.tolist() == want.tolist()
    assert p.predict(lists).labels.tolist() == want.tolist()
    # an unseen category is valid input (handle_unknown="ignore"), as natively
    row = {"age": 50, "income": 40000.0, "city": "oslo", "plan": "pro"}
    import pandas as pd

    assert p.predict([row]).labels.tolist() == model.predict(pd.DataFrame([row])).tolist()
    with pytest.raises(InputError):
        p.predict([{"age": 50, "income": 40000.0, "city": 3, "plan": "pro"}])
    with pytest.raises(InputError):
        p.predict([{"age": 50, "income": 40000.0, "city": "rome"}])


def test_xgboost_fitted_on_a_dataframe_keeps_its_feature_names(tmp_path) -> None:
    """onnxmltools only parses f<i> split names; the packer converts a name-free copy."""
    import pandas as pd
    from xgboost import XGBRegressor

    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(300, 3)), columns=["price", "rooms", "area"])
    y = 100 + 3 * df.price - df.rooms
    model = XGBRegressor(n_estimators=20, max_depth=3, n_jobs=1).fit(df[:200], y[:200])
    res = packserve.pack(model, tmp_path / "x", sample=df[200:])
    assert res.manifest.feature_names == ["price", "rooms", "area"]
    assert [t.name for t in res.manifest.inputs] == ["input"]  # numeric frame: one tensor
    p = packserve.load(res.path)
    got = p.predict(df[200:][["area", "price", "rooms"]]).values  # columns matched by name
    assert np.abs(got - model.predict(df[200:])).max() <= 1e-5 * np.abs(y).mean()


def test_numeric_column_transformer_uses_named_inputs(tmp_path) -> None:
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "unused"])
    model = Pipeline([
        ("prep", ColumnTransformer([("num", StandardScaler(), ["b", "a"])])),
        ("clf", LogisticRegression()),
    ]).fit(df, (df.a + df.b > 0).astype(int))
    res = packserve.pack(model, tmp_path / "ct", sample=df[:50])
    assert [(t.name, t.shape) for t in res.manifest.inputs] == [
        ("a", [None, 1]), ("b", [None, 1]), ("unused", [None, 1])]
    pred = packserve.load(res.path).predict(df)
    assert np.abs(pred.probabilities - model.predict_proba(df)).max() <= 1e-5


def test_column_transformer_before_forest_casts_to_float32_like_sklearn_trees(tmp_path) -> None:
    """sklearn trees cast X to float32 themselves: a float64 export must cast right before the
    forest, else scaled values that straddle a threshold in float64 flip (seen: Δp = 1/n_trees)."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    n = 600
    frame = pd.DataFrame({
        "income": rng.normal(50_000, 15_000, n),
        "age": rng.integers(18, 80, n).astype(float),
        "region": rng.choice(["north", "south", "east", "west"], n),
    })
    y = np.where((frame["income"] > 52_000) | (frame["region"] == "east"), "approve", "review")
    model = Pipeline([
        ("prep", ColumnTransformer([
            ("num", StandardScaler(), ["income", "age"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["region"]),
        ])),
        ("clf", RandomForestClassifier(n_estimators=30, random_state=0, n_jobs=1)),
    ]).fit(frame, y)
    res = packserve.pack(model, tmp_path / "credit", sample=frame.iloc[:200])
    assert res.parity.passed
    assert any("cast to float32 before RandomForestClassifier" in n for n in res.manifest.notes)
    held_out = frame.iloc[200:]
    pred = packserve.load(res.path).predict(held_out)
    assert (pred.labels == model.predict(held_out)).all()
    assert np.abs(pred.probabilities - model.predict_proba(held_out)).max() <= 1e-5

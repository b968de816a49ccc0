"""Bad input to pack gets a clear, specific error — and never a half-written bundle."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from zoo import Zoo

import packserve
from packserve.errors import (
    MissingDependencyError,
    OutputExistsError,
    PackError,
    SampleError,
    UnsupportedModelError,
)


class NotAModel:
    def predict(self, x):  # noqa: ANN001, ANN201
        return x


def test_unsupported_type_names_the_supported_ones(tmp_path) -> None:
    with pytest.raises(UnsupportedModelError) as info:
        packserve.pack(NotAModel(), tmp_path / "b", sample=np.zeros((2, 2)))
    msg = info.value.message
    assert "NotAModel" in msg
    for name in ("scikit-learn", "XGBClassifier", "LGBMClassifier", "CatBoostClassifier"):
        assert name in msg
    assert info.value.exit_code == 4


def test_sklearn_step_without_converter_is_named(tmp_path) -> None:
    from sklearn.base import BaseEstimator, TransformerMixin
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    class Doubler(TransformerMixin, BaseEstimator):
        def fit(self, x, y=None):  # noqa: ANN001, ANN201
            return self

        def transform(self, x):  # noqa: ANN001, ANN201
            return x * 2

    x = np.random.default_rng(0).normal(size=(60, 3))
    model = make_pipeline(Doubler(), LogisticRegression()).fit(x, x[:, 0] > 0)
    with pytest.raises(UnsupportedModelError, match="Doubler"):
        packserve.pack(model, tmp_path / "b", sample=x[:10])
    assert not (tmp_path / "b").exists()


def test_unfitted_model(tmp_path) -> None:
    from sklearn.ensemble import RandomForestClassifier

    with pytest.raises(PackError, match="not fitted"):
        packserve.pack(RandomForestClassifier(), tmp_path / "b", sample=np.zeros((2, 3)))


def test_svc_without_probabilities_serves_labels_and_scores(tmp_path) -> None:
    from sklearn.svm import SVC

    x = np.random.default_rng(0).normal(size=(60, 3))
    model = SVC().fit(x, x[:, 0] > 0)
    res = packserve.pack(model, tmp_path / "b", sample=x[:10])
    assert res.manifest.task == "labels"
    pred = packserve.load(res.path).predict(x[10:])
    assert pred.outputs is not None
    assert pred.outputs["label"].astype(str).tolist() == model.predict(x[10:]).astype(str).tolist()
    assert np.abs(pred.outputs["scores"] - model.decision_function(x[10:])).max() <= 1e-4


@pytest.mark.parametrize("key", ["xgboost-binary", "lightgbm-booster-binary", "catboost-binary",
                                 "sklearn-rf-multiclass"])
def test_sample_with_wrong_width(zoo: Zoo, key: str, tmp_path) -> None:
    case = zoo.case(key)
    with pytest.raises(SampleError, match="sample has 7 columns but the model expects 8"):
        packserve.pack(case.model, tmp_path / "b", sample=case.sample[:, :7])
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    "sample, match",
    [
        (np.zeros((0, 8)), "no rows"),
        (np.full((3, 8), np.nan), "every numeric value of the sample is missing"),
        (np.full((3, 8), np.inf), "infinite"),
        (np.zeros((2, 2, 8)), "2-D"),
        ([["a"] * 8], "numeric"),
        (None, "needs a sample"),
    ],
)
def test_unusable_sample(zoo: Zoo, sample, match: str, tmp_path) -> None:
    with pytest.raises(SampleError, match=match):
        packserve.pack(zoo.case("xgboost-binary").model, tmp_path / "b", sample=sample)


def test_dataframe_columns_must_match_the_model(tmp_path) -> None:
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    df = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
    model = LogisticRegression().fit(df, [0, 1, 0, 1])
    with pytest.raises(SampleError, match=r"lacks column\(s\) \['b'\]"):
        packserve.pack(model, tmp_path / "b", sample=df[["a"]].assign(c=1.0))
    # same columns in another order are simply reordered
    res = packserve.pack(model, tmp_path / "ok", sample=df[["b", "a"]])
    assert res.manifest.feature_names == ["a", "b"]


def test_existing_output_is_refused_unless_forced(zoo: Zoo, tmp_path) -> None:
    case = zoo.case("xgboost-binary")
    out = tmp_path / "b"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(OutputExistsError, match="already exists"):
        packserve.pack(case.model, out, sample=case.sample)
    assert (out / "keep.txt").exists()
    res = packserve.pack(case.model, out, sample=case.sample, force=True)
    assert not (out / "keep.txt").exists() and (res.path / "model.onnx").exists()


@pytest.mark.parametrize(
    "key, module, extra",
    [
        ("catboost-binary", "catboost", "catboost"),
        ("xgboost-binary", "onnxmltools", "xgboost"),
        ("lightgbm-binary", "onnxmltools", "lightgbm"),
        ("sklearn-rf-multiclass", "skl2onnx", "sklearn"),
    ],
)
def test_missing_optional_dependency_names_the_extra(
    zoo: Zoo, key: str, module: str, extra: str, tmp_path, monkeypatch
) -> None:
    case = zoo.case(key)  # built before the module is hidden
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    with pytest.raises(MissingDependencyError) as info:
        packserve.pack(case.model, tmp_path / "b", sample=case.sample)
    assert f"packserve[{extra}]" in info.value.message and module in info.value.message
    assert info.value.exit_code == 3


def test_catboost_categorical_features_are_refused(tmp_path) -> None:
    from catboost import CatBoostClassifier

    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(size=60), rng.integers(0, 3, 60)]).astype(object)
    x[:, 1] = x[:, 1].astype(int).astype(str)
    model = CatBoostClassifier(iterations=5, verbose=0, thread_count=1, cat_features=[1])
    model.fit(x, (rng.random(60) > 0.5).astype(int))
    with pytest.raises(UnsupportedModelError, match="categorical"):
        packserve.pack(model, tmp_path / "b", sample=np.zeros((2, 2)))


def test_unknown_option_is_refused(zoo: Zoo, tmp_path) -> None:
    case = zoo.case("catboost-binary")
    with pytest.raises(PackError, match="unknown option"):
        packserve.pack(case.model, tmp_path / "b", sample=case.sample, target_opset=12)


def test_dataframe_sample_is_matched_to_model_names_by_name(zoo: Zoo, tmp_path) -> None:
    """CatBoost and LightGBM Boosters know their names too: columns are reordered, not refused."""
    import pandas as pd
    from catboost import CatBoostRegressor

    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(200, 3)), columns=["price", "rooms", "area"])
    model = CatBoostRegressor(iterations=10, verbose=0, thread_count=1).fit(df, 100 + df.price)
    res = packserve.pack(model, tmp_path / "cb", sample=df[["area", "price", "rooms"]])
    assert res.manifest.feature_names == ["price", "rooms", "area"] and res.manifest.parity.passed
    with pytest.raises(SampleError, match=r"lacks column\(s\) \['area'\]"):
        packserve.pack(model, tmp_path / "cb2", sample=df[["price", "rooms"]].assign(x=1.0))


def test_hist_gradient_boosting_with_native_categories_is_refused(tmp_path) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(size=200), rng.integers(0, 5, 200)]).astype(float)
    model = HistGradientBoostingClassifier(max_iter=5, categorical_features=[1]).fit(
        x, (x[:, 1] % 2 == 0).astype(int))
    with pytest.raises(UnsupportedModelError, match="categorical_features"):
        packserve.pack(model, tmp_path / "b", sample=x[:20])


def test_artifact_that_does_not_load_is_a_pack_error(zoo: Zoo, tmp_path, monkeypatch) -> None:
    """A converter that writes a graph ONNX Runtime refuses: a PackError, nothing written."""
    from packserve.pack.families.sklearn import family as skl

    real = skl._convert

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        onx, workarounds = real(*args, **kwargs)
        onx.graph.node[0].op_type = "NoSuchOp"
        return onx, workarounds

    monkeypatch.setattr(skl, "_convert", broken)
    case = zoo.case("sklearn-rf-multiclass")
    with pytest.raises(PackError, match="does not load in ONNX Runtime") as info:
        packserve.pack(case.model, tmp_path / "b", sample=case.sample)
    assert str(tmp_path) not in info.value.message
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".*packserve-tmp"))


def test_clusterer_is_packed_as_a_clusterer_not_a_regressor(tmp_path) -> None:
    from sklearn.cluster import KMeans

    x = np.random.default_rng(0).normal(size=(60, 3))
    res = packserve.pack(KMeans(n_clusters=2, n_init=1).fit(x), tmp_path / "b", sample=x[:5])
    assert res.manifest.task == "cluster"
    assert [t.name for t in res.manifest.outputs.tensors] == ["label", "distances"]

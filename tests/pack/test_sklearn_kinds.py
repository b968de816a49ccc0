"""More scikit-learn (issue #19): classifiers without probabilities, clusterers, multi-output,
standalone transformers — packed with parity on named outputs, served over HTTP and V2;
converters known to be wrong refused with the reason."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

import packserve
from helpers.server import running_server
from packserve.errors import UnsupportedModelError


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    import pandas as pd
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=300, n_features=6, n_informative=4, random_state=0)
    y3 = y + (x[:, 0] > np.median(x[:, 0])).astype(int)
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"age": x[:, 0], "income": x[:, 1] * 1000,
                       "city": rng.choice(["oslo", "paris", "rome"], 300)})
    return {"x": x, "y": y, "y3": y3, "df": df}


def _models(d: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    from sklearn.cluster import KMeans
    from sklearn.compose import ColumnTransformer
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression, SGDClassifier
    from sklearn.mixture import GaussianMixture
    from sklearn.multioutput import MultiOutputClassifier
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from sklearn.svm import SVC, LinearSVC

    x, y, y3, df = d["x"], d["y"], d["y3"], d["df"]
    ct = ColumnTransformer([("num", StandardScaler(), ["age", "income"]),
                            ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"])])
    return {
        "svc": (SVC().fit(x, y), x),
        "svc3": (SVC().fit(x, y3), x),
        "linearsvc": (LinearSVC().fit(x, y3), x),
        "sgd": (SGDClassifier(random_state=0).fit(x, y), x),
        "kmeans": (KMeans(n_clusters=3, n_init=2, random_state=0).fit(x), x),
        "gmm": (GaussianMixture(n_components=3, random_state=0).fit(x), x),
        "multioutput": (MultiOutputClassifier(LogisticRegression()).fit(x, np.c_[y, y3]), x),
        "pca": (PCA(n_components=3).fit(x), x),
        "columns": (ct.fit(df), df),
    }


def _native(model: Any, rows: Any) -> dict[str, np.ndarray]:
    if not hasattr(model, "predict"):
        return {"output": np.asarray(model.transform(rows))}
    out = {"label": np.asarray(model.predict(rows))}
    if hasattr(model, "decision_function"):
        out["scores"] = model.decision_function(rows)
    elif hasattr(model, "transform"):
        out["distances"] = model.transform(rows)
    return out


@pytest.fixture(scope="module")
def packed(data, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    repo = tmp_path_factory.mktemp("kinds")
    out = {}
    for name, (model, rows) in _models(data).items():
        res = packserve.pack(model, repo / name / "1", sample=rows[:60], name=name)
        out[name] = (model, rows, res)
    return {"repo": repo, "models": out}


TASKS = {"svc": "labels", "svc3": "labels", "linearsvc": "labels", "sgd": "labels",
         "kmeans": "cluster", "gmm": "cluster", "multioutput": "labels", "pca": "transform",
         "columns": "transform"}


@pytest.mark.parametrize("name", list(TASKS))
def test_packed_with_parity_on_named_outputs(packed, name: str) -> None:
    model, rows, res = packed["models"][name]
    m = res.manifest
    assert m.task == TASKS[name] and m.parity.passed
    assert [c["output"] for c in m.parity.checks if c.get("check") == "output_parity"]
    held = rows[60:]
    pred = packserve.load(res.path).predict(held)
    assert pred.outputs is not None
    for key, want in _native(model, held).items():
        got = pred.outputs[key]
        if want.dtype.kind in "f":
            tol = 1e-5 * max(1.0, float(np.abs(want).max()))
            assert np.abs(got.reshape(want.shape) - want).max() <= tol, key
        else:
            assert np.array_equal(got.reshape(want.shape).astype(str), want.astype(str)), key


def test_served_over_http_and_v2(packed) -> None:
    with running_server(packed["repo"]) as srv:
        for name in ("svc", "kmeans", "multioutput", "pca", "columns"):
            model, rows, _ = packed["models"][name]
            row = rows.iloc[[70]] if hasattr(rows, "iloc") else rows[70:71]
            features = (row.iloc[0].tolist() if hasattr(row, "iloc") else row[0].tolist())
            r = httpx.post(f"{srv.url}/models/{name}/predict", json={"features": features})
            assert r.status_code == 200, r.text
            outputs = r.json()["outputs"]
            for key, want in _native(model, row).items():
                got = np.asarray(outputs[key])
                if want.dtype.kind in "f":
                    assert np.abs(got.reshape(want[0].shape) - want[0]).max() <= 1e-4, (name, key)
                else:
                    assert got.reshape(-1).tolist() == want[0].reshape(-1).tolist(), (name, key)
            r = httpx.post(f"{srv.url}/models/{name}/predict/batch",
                           json={"instances": [{"features": features}] * 3})
            assert r.status_code == 200 and len(r.json()["predictions"]) == 3
        md = httpx.get(f"{srv.url}/v2/models/kmeans").json()
        assert [o["name"] for o in md["outputs"]] == ["label", "distances"]
        x = packed["models"]["kmeans"][1][70:72].astype(np.float32)
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 6],
                            "data": x.ravel().tolist()}]}
        r = httpx.post(f"{srv.url}/v2/models/kmeans/infer", json=body)
        assert r.status_code == 200, r.text
        labels = next(o for o in r.json()["outputs"] if o["name"] == "label")["data"]
        assert labels == packed["models"]["kmeans"][0].predict(x.astype(np.float64)).tolist()
        doc = httpx.get(f"{srv.url}/openapi.json").json()
        assert any(k.startswith("kmeans_1_Outputs") for k in doc["components"]["schemas"])


@pytest.mark.parametrize("make, reason", [
    ("lda", "probabilities differ"),
    ("radius", "no neighbour within the radius"),
    ("dbscan", r"no predict\(\) for new rows"),
])
def test_known_wrong_or_unservable_refused_with_the_reason(data, tmp_path, make, reason) -> None:
    from sklearn.cluster import DBSCAN
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.neighbors import RadiusNeighborsClassifier

    model = {"lda": LinearDiscriminantAnalysis, "radius": RadiusNeighborsClassifier,
             "dbscan": DBSCAN}[make]()
    model.fit(data["x"], data["y"])
    with pytest.raises(UnsupportedModelError, match=reason):
        packserve.pack(model, tmp_path / "b", sample=data["x"][:20])

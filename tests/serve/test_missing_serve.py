"""Missing values over HTTP (issue #19): ``null`` in /predict, /predict/batch and V2 JSON, NaN
in V2 binary — for XGBoost, LightGBM, CatBoost, HistGradientBoosting and an imputer pipeline
trained with missing values — against a real ``packserve serve``; a model without
missing-value support answers 4xx naming the feature; the OpenAPI schema says where ``null``
is allowed."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient

import packserve
from helpers.missing_models import FEATURES, MODELS, MissingData, fit, missing_data, native_predict
from helpers.server import running_server


@pytest.fixture(scope="module")
def mdata() -> MissingData:
    return missing_data(seed=1)


@pytest.fixture(scope="module")
def models(mdata: MissingData) -> dict[str, Any]:
    return {name: fit(name, mdata) for name in MODELS}


@pytest.fixture(scope="module")
def srv(models, mdata: MissingData, tmp_path_factory: pytest.TempPathFactory):
    from sklearn.linear_model import LogisticRegression

    repo = tmp_path_factory.mktemp("missing-repo")
    sample = mdata.frame(mdata.x_test[:60])
    for name, model in models.items():
        packserve.pack(model, repo / name / "1", sample=sample, name=name)
    clean = np.nan_to_num(mdata.x_train)
    strict = LogisticRegression().fit(mdata.frame(clean), mdata.y_train)
    packserve.pack(strict, repo / "strict" / "1", sample=mdata.frame(clean[:40]), name="strict")
    with running_server(repo, "--max-batch", "64") as server:
        yield server


def _json_row(row: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else float(v) for v in row]


def _rows(mdata: MissingData) -> np.ndarray:
    """Held-out rows with their own gaps, plus rows with one more value removed each."""
    held = mdata.x_test[60:70]
    extra = np.concatenate([np.where(np.arange(6) == j, np.nan, held[:2]) for j in range(6)])
    rows = np.concatenate([held, extra])
    assert np.isnan(rows).any(axis=1).all() or np.isnan(rows).any()
    return rows


def _answer(item: dict[str, Any], classifier: bool) -> list[float]:
    if classifier:
        return [item["probabilities"][k] for k in sorted(item["probabilities"])]
    return [item["prediction"]]


def _assert_close(want: np.ndarray, got: np.ndarray, classifier: bool) -> None:
    got = got.reshape(want.shape)
    tol = 1e-5 if classifier else 1e-5 * float(np.abs(want).mean())
    assert float(np.abs(want - got).max()) <= tol


@pytest.mark.parametrize("name", list(MODELS))
def test_null_in_predict_and_batch(srv, models, mdata, name: str) -> None:
    clf = MODELS[name][1]
    rows = _rows(mdata)
    want = native_predict(models[name], mdata.frame(rows), clf)
    got = []
    for row in rows[:4]:
        r = httpx.post(f"{srv.url}/models/{name}/predict", json={"features": _json_row(row)})
        assert r.status_code == 200, r.text
        got.append(_answer(r.json(), clf))
    by_name = dict(zip(FEATURES, _json_row(rows[4]), strict=True))
    r = httpx.post(f"{srv.url}/models/{name}/predict", json={"features": by_name})
    assert r.status_code == 200, r.text
    got.append(_answer(r.json(), clf))
    _assert_close(want[:5], np.asarray(got), clf)
    r = httpx.post(f"{srv.url}/models/{name}/predict/batch",
                   json={"instances": [{"features": _json_row(row)} for row in rows]})
    assert r.status_code == 200, r.text
    batch = np.asarray([_answer(p, clf) for p in r.json()["predictions"]])
    _assert_close(want, batch, clf)


@pytest.mark.parametrize("binary", [False, True], ids=["v2-json-null", "v2-binary-nan"])
@pytest.mark.parametrize("name", list(MODELS))
def test_v2_json_and_binary(srv, models, mdata, name: str, binary: bool) -> None:
    clf = MODELS[name][1]
    rows = _rows(mdata).astype(np.float32)
    want = native_predict(models[name], mdata.frame(rows.astype(np.float64)), clf)
    out = "probabilities" if clf else "value"
    inp = httpx.get(f"{srv.url}/v2/models/{name}").json()["inputs"][0]["name"]  # catboost: features
    if binary:
        client = httpclient.InferenceServerClient(srv.url.removeprefix("http://"))
        try:
            t = httpclient.InferInput(inp, list(rows.shape), "FP32")
            t.set_data_from_numpy(rows, binary_data=True)
            res = client.infer(name, [t], outputs=[httpclient.InferRequestedOutput(out)])
            got = res.as_numpy(out)
        finally:
            client.close()
    else:
        body = {"inputs": [{"name": inp, "datatype": "FP32", "shape": list(rows.shape),
                            "data": [_json_row(r) for r in rows]}]}
        r = httpx.post(f"{srv.url}/v2/models/{name}/infer", json=body)
        assert r.status_code == 200, r.text
        got = np.asarray(next(o for o in r.json()["outputs"] if o["name"] == out)["data"])
    assert got is not None
    # float32 on the wire: compare with the native model on the same float32 values
    _assert_close(want, np.asarray(got, dtype=np.float64), clf)


def test_model_without_missing_support_names_the_feature(srv) -> None:
    row: list[float | None] = [0.5] * 6
    row[2] = None
    r = httpx.post(f"{srv.url}/models/strict/predict", json={"features": row})
    assert r.status_code == 422, r.text
    doc = r.json()
    assert "does not accept missing values" in doc["message"]
    assert doc["where"] == "feature 'debt'"
    r = httpx.post(f"{srv.url}/models/strict/predict/batch",
                   json={"instances": [{"features": [0.5] * 6}, {"features": row}]})
    assert r.status_code == 422 and r.json()["where"] == "instance 1, feature 'debt'"
    x = np.full((1, 6), 0.5, np.float32)
    x[0, 2] = np.nan
    raw = x.tobytes()
    head = httpx.Request("POST", "/", json={"inputs": [{
        "name": "input", "datatype": "FP32", "shape": [1, 6],
        "parameters": {"binary_data_size": len(raw)}}]}).content
    r = httpx.post(f"{srv.url}/v2/models/strict/infer", content=head + raw,
                   headers={"Inference-Header-Content-Length": str(len(head))})
    assert r.status_code == 400, r.text
    assert "(feature 'debt')" in r.json()["error"]


def test_openapi_says_number_or_null_only_where_allowed(srv) -> None:
    doc = httpx.get(f"{srv.url}/openapi.json").json()
    schemas = doc["components"]["schemas"]

    def feature_types(model: str) -> set[str]:
        found: set[str] = set()
        for key, schema in schemas.items():
            if key.startswith(f"{model}_1_Features"):
                for prop in schema["properties"].values():
                    found |= {t.get("type") for t in prop.get("anyOf", [prop])}
        return found

    assert feature_types("xgboost") == {"number", "null"}
    assert feature_types("strict") == {"number"}

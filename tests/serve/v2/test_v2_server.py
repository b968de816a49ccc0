"""V2 against a real ``packserve serve`` subprocess, driven by the unmodified tritonclient."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from helpers.server import running_server


@pytest.fixture(scope="module")
def srv(repo_dir: Path):
    with running_server(repo_dir, "--max-batch", "64") as server:
        yield server


@pytest.fixture(scope="module")
def client(srv):
    c = httpclient.InferenceServerClient(srv.url.removeprefix("http://"))
    yield c
    c.close()


def _predict_batch(srv, name: str, rows: list) -> dict:
    r = httpx.post(f"{srv.url}/models/{name}/predict/batch",
                   json={"instances": [{"features": row} for row in rows]})
    assert r.status_code == 200, r.text
    return r.json()


def _text(values) -> list:
    return [v.decode() if isinstance(v, bytes) else v for v in np.asarray(values).tolist()]


def test_health_and_server_metadata(client) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    md = client.get_server_metadata()
    assert md["name"] == "packserve"
    assert md["extensions"] == ["binary_tensor_data"]  # repository API off by default
    assert client.is_model_ready("fraud")
    assert client.is_model_ready("fraud", "1.0.0")
    assert not client.is_model_ready("nope")
    assert not client.is_model_ready("fraud", "9")


def test_model_metadata(client) -> None:
    md = client.get_model_metadata("fraud")
    assert md["name"] == "fraud"
    assert md["versions"] == ["1.0.0", "2.0.0"]
    assert md["platform"] == "onnxruntime_onnx"
    assert md["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 15]}]
    assert md["outputs"] == [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP64", "shape": [-1, 2]},
    ]
    assert client.get_model_metadata("fraud", "1.0.0")["inputs"] == md["inputs"]
    assert client.get_model_metadata("iris")["outputs"][0]["datatype"] == "BYTES"
    credit = client.get_model_metadata("credit")["inputs"]
    assert {"name": "city", "datatype": "BYTES", "shape": [-1, 1]} in credit
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("nope")
    assert info.value.status() == "404" and "nope" in info.value.message()


def _infer(client, name: str, inputs: dict, datatypes: dict, *, binary_in: bool,
           outputs: list[str] | None, binary_out: bool, version: str = ""):
    tensors = []
    for key, arr in inputs.items():
        t = httpclient.InferInput(key, list(arr.shape), datatypes[key])
        t.set_data_from_numpy(arr, binary_data=binary_in)
        tensors.append(t)
    requested = None if outputs is None else [
        httpclient.InferRequestedOutput(o, binary_data=binary_out) for o in outputs
    ]
    return client.infer(name, tensors, model_version=version, outputs=requested, request_id="req-1")


@pytest.mark.parametrize("binary_in", [False, True], ids=["json-in", "binary-in"])
@pytest.mark.parametrize("binary_out", [False, True], ids=["json-out", "binary-out"])
def test_chapter_model_identical_to_predict(srv, client, chapter_data, binary_in, binary_out) -> None:
    x = chapter_data.x_test[:40]
    ref = _predict_batch(srv, "fraud", x.tolist())
    res = _infer(client, "fraud", {"input": x.astype(np.float32)}, {"input": "FP32"},
                 binary_in=binary_in, outputs=["label", "probabilities"], binary_out=binary_out)
    doc = res.get_response()
    assert doc["id"] == "req-1" and doc["model_name"] == "fraud"
    assert doc["model_version"] == ref["model_version"] == "2.0.0"
    preds = ref["predictions"]
    assert res.as_numpy("label").tolist() == [p["prediction"] for p in preds]
    assert res.as_numpy("probabilities").tolist() == [
        [p["probabilities"]["0"], p["probabilities"]["1"]] for p in preds
    ]


def test_default_request_is_all_outputs_binary(srv, client, chapter_data) -> None:
    x = chapter_data.x_test[:3].astype(np.float32)
    res = _infer(client, "fraud", {"input": x}, {"input": "FP32"}, binary_in=True,
                 outputs=None, binary_out=True)
    outs = res.get_response()["outputs"]
    assert [o["name"] for o in outs] == ["label", "probabilities"]
    assert all("binary_data_size" in o["parameters"] for o in outs)


def test_requested_outputs_only(client, chapter_data) -> None:
    x = chapter_data.x_test[:3].astype(np.float32)
    res = _infer(client, "fraud", {"input": x}, {"input": "FP32"}, binary_in=False,
                 outputs=["probabilities"], binary_out=False)
    assert res.as_numpy("label") is None
    assert res.as_numpy("probabilities").shape == (3, 2)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_string_labels_identical_to_predict(srv, client, binary) -> None:
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
    ref = _predict_batch(srv, "iris", rows)["predictions"]
    res = _infer(client, "iris", {"input": np.asarray(rows, np.float32)}, {"input": "FP32"},
                 binary_in=binary, outputs=["label", "probabilities"], binary_out=binary)
    assert _text(res.as_numpy("label")) == [p["prediction"] for p in ref] == [
        "setosa", "virginica", "versicolor"]
    classes = ["setosa", "versicolor", "virginica"]
    assert res.as_numpy("probabilities").tolist() == [
        [p["probabilities"][c] for c in classes] for p in ref
    ]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_string_column_inputs_identical_to_predict(srv, client, binary) -> None:
    rows = [[30.0, 61.5, "paris"], [55.0, 42.0, "nice"], [41.0, 58.0, "lyon"]]
    ref = _predict_batch(srv, "credit", rows)["predictions"]
    md = client.get_model_metadata("credit")
    arrays = {
        "age": np.array([[r[0]] for r in rows], np.float32),
        "income": np.array([[r[1]] for r in rows], np.float32),
        "city": np.array([[r[2]] for r in rows], dtype=object),
    }
    names = [i["name"] for i in md["inputs"]]
    assert sorted(names) == ["age", "city", "income"]  # one [-1, 1] tensor per column
    res = _infer(client, "credit", {n: arrays[n] for n in names},
                 {i["name"]: i["datatype"] for i in md["inputs"]},
                 binary_in=binary, outputs=["label", "probabilities"], binary_out=binary)
    assert _text(res.as_numpy("label")) == [p["prediction"] for p in ref]
    assert res.as_numpy("probabilities").tolist() == [
        [p["probabilities"]["no"], p["probabilities"]["yes"]] for p in ref
    ]


def test_regressor_value_identical_to_predict(srv, client, chapter_data) -> None:
    x = chapter_data.x_test[:5]
    ref = _predict_batch(srv, "price", x.tolist())["predictions"]
    for binary in (False, True):
        res = _infer(client, "price", {"input": x.astype(np.float32)}, {"input": "FP32"},
                     binary_in=binary, outputs=["value"], binary_out=binary)
        assert res.as_numpy("value").tolist() == [p["prediction"] for p in ref]


def test_explicit_version(client, chapter_data) -> None:
    x = chapter_data.x_test[:1].astype(np.float32)
    for version in ("1.0.0", "2.0.0"):
        res = _infer(client, "fraud", {"input": x}, {"input": "FP32"}, binary_in=True,
                     outputs=None, binary_out=True, version=version)
        assert res.get_response()["model_version"] == version


def test_gzip_request_compression(client, chapter_data) -> None:
    x = chapter_data.x_test[:4].astype(np.float32)
    t = httpclient.InferInput("input", list(x.shape), "FP32")
    t.set_data_from_numpy(x)
    res = client.infer("fraud", [t], request_compression_algorithm="gzip")
    assert res.as_numpy("probabilities").shape == (4, 2)


# --- errors: protocol shape, right status, never a 500 ------------------------------------


def _post(srv, path: str, body: bytes, headers: dict | None = None) -> httpx.Response:
    return httpx.post(f"{srv.url}{path}", content=body, headers=headers or {})


def _binary_body(x: np.ndarray, datatype: str = "FP32") -> tuple[bytes, dict]:
    raw = x.tobytes()
    head = json.dumps({"inputs": [{"name": "input", "datatype": datatype, "shape": list(x.shape),
                                   "parameters": {"binary_data_size": len(raw)}}]}).encode()
    return head + raw, {"Inference-Header-Content-Length": str(len(head))}


@pytest.mark.parametrize(
    "case, status, fragment",
    [
        ("inf-binary", 400, "infinite value at element 4"),
        ("nan-json", 400, "not valid JSON"),
        ("shape", 400, "does not match the model's [-1, 15]"),
        ("datatype", 400, "datatype is FP64"),
        ("garbage", 400, "not valid JSON"),
        ("too-many-rows", 400, "exceed this server's limit of 64"),
        ("bad-header", 400, "must be an integer"),
        ("bad-gzip", 400, "not valid gzip"),
        ("unknown-model", 404, "no model named 'nope'"),
        ("unknown-version", 404, "has no version '7'"),
        ("unknown-output", 400, "unknown output"),
    ],
)
def test_bad_requests(srv, case: str, status: int, fragment: str) -> None:
    path = "/v2/models/fraud/infer"
    x = np.zeros((1, 15), np.float32)
    headers: dict = {}
    if case == "inf-binary":  # (NaN is a missing value, which this XGBoost model takes)
        x[0, 4] = -np.inf
        body, headers = _binary_body(x)
    elif case == "nan-json":
        body = (b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,15],"data":[NaN'
                + b",0" * 14 + b"]}]}")
    elif case == "shape":
        body, headers = _binary_body(np.zeros((1, 14), np.float32))
    elif case == "datatype":
        body, headers = _binary_body(np.zeros((1, 15), np.float64), "FP64")
    elif case == "garbage":
        body = b"\x00\x01 not json"
    elif case == "too-many-rows":
        body, headers = _binary_body(np.zeros((65, 15), np.float32))
    elif case == "bad-header":
        body, headers = _binary_body(x)
        headers = {"Inference-Header-Content-Length": "x1"}
    elif case == "bad-gzip":
        body, headers = b"not gzip at all", {"Content-Encoding": "gzip"}
    elif case == "unknown-output":
        body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 15],
                                       "data": [0.0] * 15}], "outputs": [{"name": "x"}]}).encode()
    else:
        body, headers = _binary_body(x)
        path = "/v2/models/nope/infer" if case == "unknown-model" else "/v2/models/fraud/versions/7/infer"
    r = _post(srv, path, body, headers)
    assert r.status_code == status, r.text
    doc = r.json()
    assert list(doc) == ["error"], doc
    assert fragment in doc["error"]


def test_tritonclient_sees_the_error_message(client) -> None:
    x = np.zeros((1, 15), np.float32)
    x[0, 0] = np.inf
    t = httpclient.InferInput("input", [1, 15], "FP32")
    t.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException) as info:
        client.infer("fraud", [t])
    assert info.value.status() == "400"
    assert "infinite value at element 0" in info.value.message()


def test_other_v2_errors_use_the_protocol_shape(srv) -> None:
    r = httpx.get(f"{srv.url}/v2/no/such/route")
    assert r.status_code == 404 and list(r.json()) == ["error"]
    r = httpx.get(f"{srv.url}/v2/models/fraud/infer")
    assert r.status_code == 405 and list(r.json()) == ["error"]
    r = httpx.post(f"{srv.url}/v2/repository/index")
    assert r.status_code == 404 and "disabled" in r.json()["error"]
    big = gzip.compress(b"\0" * (9 * 1024 * 1024))
    r = _post(srv, "/v2/models/fraud/infer", big, {"Content-Encoding": "gzip"})
    assert r.status_code == 413 and list(r.json()) == ["error"]
    # /predict keeps packserve's own error shape
    r = httpx.post(f"{srv.url}/models/nope/predict", json={"features": [0.0] * 15})
    assert r.status_code == 404 and r.json()["error"] == "model_not_found"

"""Integration: a real ``packserve serve`` subprocess, spoken to over HTTP."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import numpy as np
import pytest

from helpers.models import example
from helpers.server import ENGINES, running_server

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def single(chapter_bundle: Path):
    with running_server(chapter_bundle) as srv:
        yield srv


@pytest.fixture(scope="module", params=ENGINES)
def limited(request: pytest.FixtureRequest, repo_dir: Path):
    """A small body limit, on each engine (413 while reading is the app's, on any engine)."""
    with running_server(repo_dir, "--default-model", "fraud", "--max-body-bytes", "65536",
                        env={"PACKSERVE_SERVER": request.param}) as srv:
        yield srv


@pytest.fixture(scope="module")
def repo(repo_dir: Path):
    with running_server(repo_dir, "--default-model", "fraud", "--max-batch", "50",
                        "--max-body-bytes", "65536") as srv:
        yield srv


def post(url: str, body: object) -> httpx.Response:
    return httpx.post(url, json=body, timeout=30)


def raw(url: str, content: bytes, ctype: str | None = "application/json") -> httpx.Response:
    headers = {"content-type": ctype} if ctype else {}
    return httpx.post(url, content=content, headers=headers, timeout=30)


def assert_clean_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) <= {"error", "message", "where"} and body["error"] and body["message"]
    text = r.text
    for leak in ("Traceback", 'File "', "/tmp", "site-packages", "/work/", ".py"):
        assert leak not in text, text
    return body


# --- happy paths --------------------------------------------------------------------------


def test_predict_single_matches_runtime(single, chapter_bundle: Path, chapter_data) -> None:
    import packserve

    pred = packserve.load(chapter_bundle).predict(chapter_data.x_test[:3])
    for i, row in enumerate(chapter_data.x_test[:3]):
        r = post(f"{single.url}/predict", {"features": row.tolist()})
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"prediction", "probability", "probabilities", "model_version"}
        assert body["prediction"] == int(pred.labels[i]) and isinstance(body["prediction"], int)
        assert body["probabilities"].keys() == {"0", "1"}
        assert body["probabilities"]["1"] == pytest.approx(pred.probabilities[i, 1], abs=1e-6)
        assert body["probability"] == body["probabilities"][str(body["prediction"])]
        assert body["model_version"] == "1.0.0"


def test_predict_by_feature_name_equals_by_position(single, chapter_data) -> None:
    row = chapter_data.x_test[7].tolist()
    by_pos = post(f"{single.url}/predict", {"features": row}).json()
    named = {f"f{i}": v for i, v in reversed(list(enumerate(row)))}
    by_name = post(f"{single.url}/predict", {"features": named}).json()
    assert by_pos == by_name


def test_batch_of_default_max_1000(single, chapter_data, chapter_bundle: Path) -> None:
    import packserve

    rows = np.resize(chapter_data.x_test, (1000, 15))
    r = post(f"{single.url}/predict/batch", {"instances": [{"features": x} for x in rows.tolist()]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["batch_size"] == 1000 and len(body["predictions"]) == 1000
    assert body["model_version"] == "1.0.0"
    ref = packserve.load(chapter_bundle).predict(rows)
    got = np.array([p["probabilities"]["1"] for p in body["predictions"]])
    assert np.abs(got - ref.probabilities[:, 1]).max() < 1e-6
    assert [p["prediction"] for p in body["predictions"]] == ref.labels.tolist()
    too_many = post(f"{single.url}/predict/batch", {"instances": [{"features": rows[0].tolist()}] * 1001})
    assert "1 to 1000" in assert_clean_error(too_many, 422)["message"]


def test_health_shapes(single) -> None:
    assert httpx.get(f"{single.url}/health/live").status_code == 200
    r = httpx.get(f"{single.url}/health/ready")
    assert r.status_code == 200 and r.json()["status"] == "ready"
    r = httpx.get(f"{single.url}/health")
    assert r.status_code == 200
    assert r.json() == {"status": "healthy", "model_loaded": True, "model_version": "1.0.0"}


def test_models_listing(repo) -> None:
    body = httpx.get(f"{repo.url}/models").json()
    assert body["default_model"] == "fraud"
    got = {(m["name"], m["version"], m["state"]) for m in body["models"]}
    assert got == {("fraud", "1.0.0", "ready"), ("fraud", "2.0.0", "ready"), ("iris", "1", "ready"),
                   ("price", "1", "ready"), ("credit", "1", "ready")}
    assert [m["version"] for m in httpx.get(f"{repo.url}/models/fraud").json()] == ["1.0.0", "2.0.0"]
    assert_clean_error(httpx.get(f"{repo.url}/models/nope"), 404)


def test_repository_routes_and_label_types(repo, chapter_data) -> None:
    row = chapter_data.x_test[0].tolist()
    assert post(f"{repo.url}/predict", {"features": row}).json()["model_version"] == "2.0.0"
    assert post(f"{repo.url}/models/fraud/versions/1.0.0/predict",
                {"features": row}).json()["model_version"] == "1.0.0"
    b = post(f"{repo.url}/models/fraud/versions/1.0.0/predict/batch",
             {"instances": [{"features": row}] * 2}).json()
    assert b["batch_size"] == 2 and b["model_version"] == "1.0.0"
    iris = post(f"{repo.url}/models/iris/predict", {"features": {
        "sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}}).json()
    assert iris["prediction"] == "virginica"
    assert iris["probabilities"].keys() == {"setosa", "versicolor", "virginica"}
    price = post(f"{repo.url}/models/price/predict/batch", {"instances": [{"features": row}] * 3}).json()
    assert set(price["predictions"][0]) == {"prediction"}
    assert isinstance(price["predictions"][0]["prediction"], float)
    one = post(f"{repo.url}/models/price/predict", {"features": row}).json()
    assert set(one) == {"prediction", "model_version"}


def test_string_features(repo) -> None:
    ok = post(f"{repo.url}/models/credit/predict", {"features": [70.0, 60.0, "paris"]})
    assert ok.status_code == 200 and ok.json()["prediction"] in ("yes", "no")
    named = post(f"{repo.url}/models/credit/predict",
                 {"features": {"city": "paris", "income": 60.0, "age": 70}})
    assert named.json() == ok.json()
    bad = post(f"{repo.url}/models/credit/predict/batch",
               {"instances": [{"features": [1, 2, "lyon"]}, {"features": [1, 2, 3]}]})
    body = assert_clean_error(bad, 422)
    assert body["where"] == "instance 1, feature 'city'" and "string" in body["message"]
    bad = post(f"{repo.url}/models/credit/predict", {"features": ["70", 60.0, "paris"]})
    assert assert_clean_error(bad, 422)["where"] == "feature 'age'"


# --- bad input: a clear 4xx, never a 500 ----------------------------------------------------

ROW = [0.5] * 15


def _with(i: int, value: object) -> list:
    row = list(ROW)
    row[i] = value
    return row


JSON_CASES = [
    ("too few", {"features": ROW[:14]}, 422, "features", "expected 15"),
    ("too many", {"features": ROW + [1.0]}, 422, "features", "expected 15"),
    ("string number", {"features": _with(3, "1.5")}, 422, "feature 'f3'", "number"),
    ("boolean", {"features": _with(0, True)}, 422, "feature 'f0'", "boolean"),
    ("nested array", {"features": _with(2, [1.0])}, 422, "feature 'f2'", "array"),
    ("object value", {"features": _with(2, {"a": 1})}, 422, "feature 'f2'", "object"),
    ("overflow f32", {"features": _with(5, 1e39)}, 422, "feature 'f5'", "float32"),
    ("overflow f32 neg", {"features": _with(6, -3.5e38)}, 422, "feature 'f6'", "float32"),
    ("unknown name", {"features": {**{f"f{i}": 0.0 for i in range(14)}, "income": 1.0}}, 422,
     "features", "unknown feature 'income'"),
    ("missing name", {"features": {f"f{i}": 0.0 for i in range(14)}}, 422, "features",
     "missing feature 'f14'"),
    ("features string", {"features": "1,2,3"}, 422, "features", "array"),
    ("features null", {"features": None}, 422, "features", "null"),
    ("no features", {"rows": [ROW]}, 422, "body", "features"),
    ("extra key", {"features": ROW, "debug": True}, 422, "body", "unexpected key"),
    ("body is array", [ROW], 422, "body", "object"),
]


@pytest.mark.parametrize("name, body, status, where, msg", JSON_CASES, ids=[c[0] for c in JSON_CASES])
def test_bad_single(repo, name, body, status, where, msg) -> None:
    got = assert_clean_error(post(f"{repo.url}/predict", body), status)
    assert got.get("where") == where and msg in got["message"]


BATCH_CASES = [
    ("empty", {"instances": []}, "instances", "1 to 50"),
    ("oversized", {"instances": [{"features": ROW}] * 51}, "instances", "1 to 50"),
    ("not a list", {"instances": {"features": ROW}}, "instances", "array"),
    ("bare rows", {"instances": [ROW]}, "instance 0", "object"),
    ("missing features", {"instances": [{"features": ROW}, {"feature": ROW}]}, "instance 1", "features"),
    ("extra key", {"instances": [{"features": ROW, "id": 3}]}, "instance 0", "unexpected key"),
    ("bad value at 3", {"instances": [{"features": ROW}] * 3 + [{"features": _with(2, "x")}]},
     "instance 3, feature 'f2'", "number"),
    ("short row at 2", {"instances": [{"features": ROW}] * 2 + [{"features": ROW[:3]}]},
     "instance 2", "expected 15"),
    ("overflow at 1", {"instances": [{"features": ROW}, {"features": _with(9, 1e39)}]},
     "instance 1, feature 'f9'", "float32"),
    ("unknown name at 1", {"instances": [{"features": ROW}, {"features": {"income": 1}}]},
     "instance 1", "unknown feature 'income'"),
]


@pytest.mark.parametrize("name, body, where, msg", BATCH_CASES, ids=[c[0] for c in BATCH_CASES])
def test_bad_batch(repo, name, body, where, msg) -> None:
    got = assert_clean_error(post(f"{repo.url}/predict/batch", body), 422)
    assert got.get("where") == where and msg in got["message"]


RAW_CASES = [
    ("NaN literal", b'{"features": [NaN, 1]}', 422),
    ("Infinity literal", b'{"features": [Infinity, 1]}', 422),
    ("-Infinity literal", b'{"features": [-Infinity, 1]}', 422),
    ("double overflow", b'{"features": [1e400, 1]}', 422),
    ("lone surrogate escape", b'{"features": ["\\ud800", 1]}', 422),
    ("lone surrogate bytes", b'{"features": ["\xed\xa0\x80"]}', 422),
    ("malformed", b'{"features": [1, 2,, 3]}', 400),
    ("truncated", b'{"features": [1, 2', 400),
    ("trailing garbage", b'{"features": [1]} x', 400),
    ("empty body", b"", 400),
    ("not utf8", b'{"features": ["\xff\xfe"]}', 422),
]


@pytest.mark.parametrize("name, content, status", RAW_CASES, ids=[c[0] for c in RAW_CASES])
def test_bad_json(repo, name, content, status) -> None:
    r = raw(f"{repo.url}/predict", content)
    if name == "not utf8":
        assert r.status_code in (400, 422)
        assert_clean_error(r, r.status_code)
    else:
        assert_clean_error(r, status)
    r = raw(f"{repo.url}/predict/batch", content)
    assert r.status_code in (400, 422) and r.status_code != 500


def test_null_is_missing_where_the_model_takes_it(repo) -> None:
    """fraud (XGBoost) measured at pack time to take missing values: null -> NaN; iris
    (LogisticRegression) does not: 422 naming the feature."""
    r = post(f"{repo.url}/predict", {"features": _with(14, None)})
    assert r.status_code == 200, r.text
    body = assert_clean_error(
        post(f"{repo.url}/models/iris/predict", {"features": [5.0, 3.0, None, 1.0]}), 422)
    assert body["where"] == "feature 'petal_length'" and "null" in body["message"]
    assert "does not accept missing values" in body["message"]


def test_nan_is_never_echoed(repo) -> None:
    r = raw(f"{repo.url}/predict", b'{"features": [NaN]}')
    assert "NaN" not in r.json()["message"].replace("NaN and Infinity", "")


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_415(repo, ctype) -> None:
    assert_clean_error(raw(f"{repo.url}/predict", json.dumps({"features": ROW}).encode(), ctype), 415)


def test_compressed_body_is_415(repo) -> None:
    import gzip

    r = httpx.post(f"{repo.url}/predict", content=gzip.compress(json.dumps({"features": ROW}).encode()),
                   headers={"content-type": "application/json", "content-encoding": "gzip"})
    assert_clean_error(r, 415)


def test_json_with_charset_is_fine(repo) -> None:
    r = raw(f"{repo.url}/predict", json.dumps({"features": ROW}).encode(), "application/json; charset=utf-8")
    assert r.status_code == 200


def test_unknown_model_version_route_method(repo) -> None:
    assert assert_clean_error(post(f"{repo.url}/models/nope/predict", {"features": ROW}), 404)[
        "error"] == "model_not_found"
    assert_clean_error(post(f"{repo.url}/models/fraud/versions/9.9/predict", {"features": ROW}), 404)
    assert_clean_error(post(f"{repo.url}/nothing/here", {"features": ROW}), 404)
    r = httpx.get(f"{repo.url}/predict")
    assert_clean_error(r, 405)
    assert r.headers["allow"] == "POST"
    assert_clean_error(httpx.put(f"{repo.url}/models/fraud/predict/batch", json={}), 405)
    assert_clean_error(httpx.post(f"{repo.url}/models", json={}), 405)


def _raw_http(port: int, head: bytes, body_chunks: list[bytes]) -> tuple[bytes, int]:
    """Send a request by hand; return (response bytes, bytes of body actually sent)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)
        for chunk in body_chunks:
            try:
                s.sendall(chunk)
                sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    return data, sent


def test_413_declared_length_refused_before_reading(limited) -> None:
    size = 50 * 1024 * 1024
    head = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % size)
    data, sent = _raw_http(limited.port, head, [b"[" * 65536] * 4)
    assert data.startswith(b"HTTP/1.1 413"), data[:200]
    assert b"connection: close" in data.lower()  # the body stays unread: the connection closes
    assert b"payload_too_large" in data
    assert sent < size


def test_413_chunked_body_refused_while_reading(limited) -> None:
    head = (b"POST /predict/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (32768, b" " * 32768)
    data, _ = _raw_http(limited.port, head, [chunk] * 8)
    assert data.startswith(b"HTTP/1.1 413"), data[:200]


def test_413_on_regular_routes_too(limited) -> None:
    r = httpx.post(f"{limited.url}/models", content=b"x" * 70000,
                   headers={"content-type": "application/json"})
    assert_clean_error(r, 413)
    assert r.headers["connection"] == "close"


# --- OpenAPI ---------------------------------------------------------------------------------


def test_openapi_is_valid_with_exact_per_model_schemas(repo, chapter_bundle: Path) -> None:
    from openapi_spec_validator import validate

    doc = httpx.get(f"{repo.url}/openapi.json").json()
    validate(doc)
    schemas = doc["components"]["schemas"]
    op = doc["paths"]["/models/fraud/versions/1.0.0/predict"]["post"]
    ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    content = op["requestBody"]["content"]["application/json"]
    assert content["example"] == {"features": example(chapter_bundle)}
    variants = schemas[ref]["properties"]["features"]["anyOf"]
    array = next(v for v in variants if v.get("type") == "array")
    assert array["minItems"] == array["maxItems"] == 15
    # XGBoost takes missing values (measured at pack time): number | null
    assert array["items"]["anyOf"] == [{"type": "number"}, {"type": "null"}]
    assert "f0, f1" in array["description"]
    obj = schemas[next(v for v in variants if "$ref" in v)["$ref"].rsplit("/", 1)[1]]
    assert obj["required"] == [f"f{i}" for i in range(15)] and obj["additionalProperties"] is False
    resp = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert schemas[resp]["properties"]["prediction"]["enum"] == [0, 1]
    assert op["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    # string features -> per-position types; string labels keep their type
    credit = doc["paths"]["/models/credit/predict"]["post"]
    cref = credit["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    carr = next(v for v in schemas[cref]["properties"]["features"]["anyOf"] if v.get("type") == "array")
    assert [p["type"] for p in carr["prefixItems"]] == ["number", "number", "string"]
    iris = doc["paths"]["/models/iris/predict"]["post"]["responses"]["200"]["content"]
    iref = iris["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert schemas[iref]["properties"]["prediction"]["enum"] == ["setosa", "versicolor", "virginica"]
    batch = doc["paths"]["/predict/batch"]["post"]["requestBody"]["content"]["application/json"]
    bref = batch["schema"]["$ref"].rsplit("/", 1)[1]
    assert schemas[bref]["properties"]["instances"]["maxItems"] == 50
    for path in ("/health", "/health/ready", "/health/live", "/models", "/metrics"):
        assert path in doc["paths"]
    assert httpx.get(f"{repo.url}/docs").status_code == 200


# --- metrics -----------------------------------------------------------------------------------


def test_metrics(single) -> None:
    post(f"{single.url}/predict", {"features": ROW})
    post(f"{single.url}/predict", {"features": ROW[:2]})
    text = httpx.get(f"{single.url}/metrics").text
    assert "process_resident_memory_bytes" in text and "process_cpu_seconds_total" in text
    assert 'packserve_requests_total{method="POST",route="/predict",status="200"}' in text
    assert 'packserve_requests_total{method="POST",route="/predict",status="422"}' in text
    assert 'packserve_request_duration_seconds_bucket{le="0.005",route="/predict"}' in text
    assert 'packserve_inference_duration_seconds_count{mode="inline",model="fraud",version="1.0.0"}' in text
    assert 'packserve_model_state{model="fraud",state="ready",version="1.0.0"} 1.0' in text


# --- auth -----------------------------------------------------------------------------------------


@pytest.mark.usefixtures("engine")  # and the access log, on each engine
def test_api_key(chapter_bundle: Path) -> None:
    with running_server(chapter_bundle, "--access-log", env={"PACKSERVE_API_KEY": "s3cret-key"}) as srv:
        body = {"features": ROW}
        r = post(f"{srv.url}/predict", body)
        body401 = assert_clean_error(r, 401)
        assert body401 == {"error": "unauthorized", "message": "missing or invalid API key"}
        assert r.headers["www-authenticate"] == "Bearer"
        assert_clean_error(httpx.post(f"{srv.url}/predict", json=body,
                                      headers={"authorization": "Bearer wrong"}), 401)
        assert_clean_error(httpx.get(f"{srv.url}/models"), 401)
        assert_clean_error(httpx.post(f"{srv.url}/predict/batch", content=b"garbage"), 401)
        ok = httpx.post(f"{srv.url}/predict", json=body, headers={"authorization": "Bearer s3cret-key"})
        assert ok.status_code == 200
        ok = httpx.post(f"{srv.url}/models/fraud/predict", json=body, headers={"x-api-key": "s3cret-key"})
        assert ok.status_code == 200
        assert httpx.get(f"{srv.url}/models", headers={"x-api-key": "s3cret-key"}).status_code == 200
        for open_path in ("/health", "/health/live", "/health/ready", "/metrics"):
            assert httpx.get(f"{srv.url}{open_path}").status_code == 200, open_path
        for docs_path in ("/openapi.json", "/docs", "/redoc"):  # the docs need the key too
            assert_clean_error(httpx.get(f"{srv.url}{docs_path}"), 401)
        doc = httpx.get(f"{srv.url}/openapi.json", headers={"x-api-key": "s3cret-key"}).json()
        assert "bearerAuth" in doc["components"]["securitySchemes"]
        assert doc["paths"]["/predict"]["post"]["security"]
        lines = [json.loads(ln) for ln in srv.output().splitlines() if ln.startswith('{"ts"')]
        first = next(ln for ln in lines if ln["path"] == "/predict")
        assert {"route": "/predict", "status": 401, "method": "POST"}.items() <= first.items()
        assert any(ln["route"] == "/health/ready" and ln["status"] == 200 for ln in lines)
        assert "s3cret" not in srv.output()

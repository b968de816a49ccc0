"""The V2 codec against real bundles, with request bodies built and responses read by the
unmodified ``tritonclient`` codec (``generate_request_body`` / ``parse_response_body``)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import orjson
import pytest
import tritonclient.http as httpclient
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import packserve
from packserve.errors import BadRequestError
from packserve.serve.v2 import codec as v2

Client = httpclient.InferenceServerClient


@pytest.fixture(scope="module")
def fraud(chapter_bundle: Path):
    return packserve.load(chapter_bundle)


@pytest.fixture(scope="module")
def iris(iris_string_bundle: Path):
    return packserve.load(iris_string_bundle)


@pytest.fixture(scope="module")
def price(regressor_bundle: Path):
    return packserve.load(regressor_bundle)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory):
    """A ColumnTransformer pipeline: one [-1, 1] tensor per column, a string column."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": rng.random(80), "city": rng.choice(["Köln", "Paris", "Oslo"], 80)})
    y = ((df.x > 0.5) ^ (df.city == "Oslo")).astype(int)
    pipe = Pipeline([
        ("ct", ColumnTransformer([
            ("n", StandardScaler(), ["x"]),
            ("o", OneHotEncoder(handle_unknown="ignore"), ["city"]),
        ])),
        ("lr", LogisticRegression()),
    ]).fit(df, y)
    out = tmp_path_factory.mktemp("v2") / "mixed"
    return packserve.load(packserve.pack(pipe, out, sample=df[:30], name="mixed").path)


def _inp(name: str, arr: np.ndarray, datatype: str, binary: bool):
    t = httpclient.InferInput(name, list(arr.shape), datatype)
    t.set_data_from_numpy(arr, binary_data=binary)
    return t


def _body(inputs, outputs=None, **kw) -> tuple[bytes, int | None]:
    body, json_size = Client.generate_request_body(inputs, outputs=outputs, **kw)
    return body, json_size


def _json_body(inputs: list) -> tuple[bytes, None]:
    return orjson.dumps({"inputs": inputs}), None


def _roundtrip(pred, inputs, outputs=None, **kw):
    body, json_size = _body(inputs, outputs, **kw)
    req = v2.parse_infer_request(body, pred.manifest, header_length=json_size)
    prediction = pred.run(req.feeds)
    enc = v2.encode_infer_response(
        prediction, pred.manifest, req, model_name=pred.name, model_version=pred.version
    )
    hl = enc.headers.get(v2.HEADER_LENGTH)
    result = Client.parse_response_body(enc.body, header_length=None if hl is None else int(hl))
    return req, prediction, enc, result


# --- metadata ------------------------------------------------------------------------------


def test_metadata_exposes_the_artifact_tensors(fraud, iris, price, mixed) -> None:
    md = v2.model_metadata(fraud.manifest, versions=["1"])
    assert md == {
        "name": "fraud",
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 15]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, 2]},
        ],
    }
    assert v2.model_metadata(iris.manifest)["outputs"][0] == {
        "name": "label", "datatype": "BYTES", "shape": [-1]
    }
    assert v2.model_metadata(price.manifest)["outputs"] == [
        {"name": "value", "datatype": "FP64", "shape": [-1]}
    ]
    assert v2.model_metadata(mixed.manifest)["inputs"] == [
        {"name": "x", "datatype": "FP32", "shape": [-1, 1]},
        {"name": "city", "datatype": "BYTES", "shape": [-1, 1]},
    ]
    assert v2.server_metadata("0.1.0")["extensions"] == ["binary_tensor_data"]


# --- inference: identical to /predict's path ----------------------------------------------


@pytest.mark.parametrize("binary", [False, True])
def test_chapter_model_identical_to_predict(fraud, chapter_data, binary: bool) -> None:
    x = chapter_data.x_test[:37]
    ref = fraud.predict(x)
    req, pred, enc, res = _roundtrip(
        fraud, [_inp("input", x.astype(np.float32), "FP32", binary)], request_id="r-7"
    )
    assert req.rows == 37
    # tritonclient asks for binary outputs when none are named.
    assert enc.media_type == "application/octet-stream"
    assert res.get_response()["id"] == "r-7"
    assert res.get_response()["model_name"] == "fraud"
    assert np.array_equal(res.as_numpy("label"), ref.labels)
    assert np.array_equal(res.as_numpy("probabilities"), ref.probabilities)
    records = ref.to_records()
    assert res.as_numpy("label").tolist() == [r["prediction"] for r in records]
    assert res.as_numpy("probabilities").tolist() == [
        [r["probabilities"][str(c)] for c in ref.classes] for r in records
    ]


@pytest.mark.parametrize("binary_in", [False, True])
@pytest.mark.parametrize("binary_out", [False, True])
def test_string_labels_are_bytes(iris, binary_in: bool, binary_out: bool) -> None:
    x = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
    outputs = [
        httpclient.InferRequestedOutput("probabilities", binary_data=binary_out),
        httpclient.InferRequestedOutput("label", binary_data=binary_out),
    ]
    _, _, enc, res = _roundtrip(iris, [_inp("input", x, "FP32", binary_in)], outputs)
    doc = res.get_response()
    assert [o["name"] for o in doc["outputs"]] == ["probabilities", "label"]
    assert doc["outputs"][1]["datatype"] == "BYTES"
    labels = [v.decode() if isinstance(v, bytes) else v for v in res.as_numpy("label").tolist()]
    assert labels == ["setosa", "virginica"]
    assert np.array_equal(res.as_numpy("probabilities"), iris.predict(x).probabilities)
    assert (v2.HEADER_LENGTH in enc.headers) is binary_out


def test_regressor_value(price, chapter_data) -> None:
    x = chapter_data.x_test[:5]
    _, _, _, res = _roundtrip(price, [_inp("input", x.astype(np.float32), "FP32", True)])
    ref = price.predict(x)
    assert res.as_numpy("value").tolist() == [r["prediction"] for r in ref.to_records()]


@pytest.mark.parametrize("binary", [False, True])
def test_string_column_tensors(mixed, binary: bool) -> None:
    xs = np.array([[0.2], [0.9], [0.7]], dtype=np.float32)
    cities = np.array([["Köln"], ["Oslo"], ["Paris"]], dtype=object)
    inputs = [_inp("x", xs, "FP32", binary), _inp("city", cities, "BYTES", binary)]
    req, pred, _, res = _roundtrip(mixed, inputs)
    rows = [[0.2, "Köln"], [0.9, "Oslo"], [0.7, "Paris"]]
    ref_feeds = mixed.to_feeds(rows)
    assert req.feeds["city"].tolist() == ref_feeds["city"].tolist()
    assert np.array_equal(req.feeds["x"], ref_feeds["x"])
    assert np.array_equal(res.as_numpy("probabilities"), mixed.predict(rows).probabilities)


def test_nested_flat_and_partial_json_data_agree(fraud, chapter_data) -> None:
    x = chapter_data.x_test[:3]
    flat = x.reshape(-1).tolist()
    for data in (x.tolist(), flat):
        doc = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 15], "data": data}]}
        req = v2.parse_infer_request(orjson.dumps(doc), fraud.manifest)
        assert np.array_equal(req.feeds["input"], fraud.to_feeds(x)["input"])


def test_outputs_selection_and_json_default(fraud) -> None:
    doc = {
        "id": "abc",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 15], "data": [0.5] * 15}],
        "outputs": [{"name": "probabilities"}],
    }
    req = v2.parse_infer_request(orjson.dumps(doc), fraud.manifest)
    enc = v2.encode_infer_response(
        fraud.run(req.feeds), fraud.manifest, req, model_name="fraud", model_version="1"
    )
    body = orjson.loads(enc.body)
    assert enc.media_type == "application/json" and not enc.headers
    assert body["id"] == "abc" and body["model_version"] == "1"
    assert [o["name"] for o in body["outputs"]] == ["probabilities"]
    assert body["outputs"][0]["shape"] == [1, 2]
    assert len(body["outputs"][0]["data"]) == 2  # flat, row-major
    # no outputs, no binary_data_output: every output as JSON
    doc.pop("outputs")
    doc.pop("id")
    req = v2.parse_infer_request(orjson.dumps(doc), fraud.manifest)
    enc = v2.encode_infer_response(
        fraud.run(req.feeds), fraud.manifest, req, model_name="fraud", model_version="1"
    )
    body = orjson.loads(enc.body)
    assert "id" not in body
    assert [o["name"] for o in body["outputs"]] == ["label", "probabilities"]


def test_request_binary_output_with_per_output_override(fraud) -> None:
    doc = {
        "parameters": {"binary_data_output": True},
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 15], "data": [0.1] * 30}],
        "outputs": [{"name": "label", "parameters": {"binary_data": False}}, {"name": "probabilities"}],
    }
    req = v2.parse_infer_request(orjson.dumps(doc), fraud.manifest)
    assert [(o.name, o.binary) for o in req.outputs] == [("label", False), ("probabilities", True)]
    enc = v2.encode_infer_response(
        fraud.run(req.feeds), fraud.manifest, req, model_name="fraud", model_version="1"
    )
    n = int(enc.headers[v2.HEADER_LENGTH])
    head = orjson.loads(enc.body[:n])
    assert head["outputs"][1]["parameters"] == {"binary_data_size": 32}
    assert np.frombuffer(enc.body[n:], "<f8").shape == (4,)


def test_timeout_parameter_becomes_a_deadline(fraud) -> None:
    body, size = _body([_inp("input", np.zeros((1, 15), np.float32), "FP32", True)], timeout=250_000)
    assert v2.parse_infer_request(body, fraud.manifest, header_length=size).timeout_s == 0.25


# --- rejection ---------------------------------------------------------------------------


def _json_req(data, *, shape=(1, 15), datatype="FP32", name="input", **extra) -> bytes:
    item = {"name": name, "datatype": datatype, "shape": list(shape), "data": data}
    return orjson.dumps({"inputs": [item], **extra})


ROW = [0.5] * 15


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b"{not json", "not valid JSON"),
        (b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 15], "data": '
         b"[NaN, 0,0,0,0,0,0,0,0,0,0,0,0,0,0]}]}", "NaN and Infinity are not JSON numbers"),
        (b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 15], "data": '
         b"[0, -Infinity, 0,0,0,0,0,0,0,0,0,0,0,0,0]}]}", "NaN and Infinity are not JSON numbers"),
        (b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 15], "data": '
         b"[1e999, 0,0,0,0,0,0,0,0,0,0,0,0,0,0]}]}", "overflows a double"),
        (b"[]", "JSON object"),
        (orjson.dumps({"inputs": []}), "non-empty"),
        (_json_req([1e39] + ROW[1:]), "overflows FP32"),
        (_json_req(ROW, datatype="FP64"), "datatype is FP64, the model takes FP32"),
        (_json_req(ROW, datatype="FP8"), "unknown datatype"),
        (_json_req(ROW[:14], shape=(1, 14)), "does not match the model's [-1, 15]"),
        (_json_req(ROW, shape=(15,)), "does not match"),
        (_json_req(ROW, shape=(2, 15)), "does not match the shape"),
        (_json_req([ROW, 0.5], shape=(2, 15)), "mixes lists and values"),
        (_json_req([ROW, ROW[:14] + [[0.5]]], shape=(2, 15)), "cannot hold array"),
        (_json_req([ROW, ROW[:14]], shape=(2, 15)), "ragged"),
        (_json_req([[ROW]], shape=(1, 15)), "nested deeper"),
        (_json_req([True] + ROW[1:]), "cannot hold boolean"),
        (_json_req(["1"] + ROW[1:]), "cannot hold string"),
        (_json_req(None), "must be a JSON array"),
        (_json_req([], shape=(0, 15)), "no rows"),
        (_json_req(ROW, name="nope"), "unknown input 'nope'"),
        (_json_req(ROW, shape=(1, -15)), "non-negative"),
        (_json_req(ROW, id=7), "'id' must be a string"),
        (_json_req(ROW, outputs=[{"name": "score"}]), "unknown output 'score'"),
        (_json_req(ROW, outputs=[{"name": "label"}, {"name": "label"}]), "twice"),
        (_json_req(ROW, outputs=[{"name": "label", "parameters": {"classification": 2}}]),
         "classification"),
        (_json_req(ROW, parameters={"binary_data_output": "yes"}), "true or false"),
        (_json_req(ROW, parameters={"sequence_id": 3}), "stateless"),
        (_json_req(ROW, parameters={"timeout": -1}), "timeout"),
        (orjson.dumps({"inputs": [
            {"name": "input", "datatype": "FP32", "shape": [1, 15], "data": ROW},
            {"name": "input", "datatype": "FP32", "shape": [1, 15], "data": ROW}]}), "twice"),
        (orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 15]}]}),
         "neither"),
    ],
)
def test_bad_json_requests_are_400(fraud, body: bytes, fragment: str) -> None:
    with pytest.raises(BadRequestError) as info:
        v2.parse_infer_request(body, fraud.manifest)
    assert info.value.http_status == 400
    assert fragment in info.value.message


def _binary_req(raw: bytes, *, shape=(1, 15), datatype="FP32", size=None, trailer=b"", **extra):
    item = {"name": "input", "datatype": datatype, "shape": list(shape),
            "parameters": {"binary_data_size": len(raw) if size is None else size}}
    item.update(extra)
    head = orjson.dumps({"inputs": [item]})
    return head + raw + trailer, len(head)


@pytest.mark.parametrize("value", [np.inf, -np.inf])
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infinite_floats_are_400_even_where_missing_is_allowed(fraud, value, binary) -> None:
    assert fraud.manifest.missing_values == "all"
    x = np.zeros((1, 15), np.float32)
    x[0, 3] = value
    if binary:
        body, size = _body([_inp("input", x, "FP32", True)])
    else:  # JSON cannot say Infinity; a huge number overflows FP32 instead
        body, size = _json_body([{"name": "input", "datatype": "FP32", "shape": [1, 15],
                                  "data": [0.0] * 3 + [1e39 * float(np.sign(value))] + [0.0] * 11}])
    with pytest.raises(BadRequestError, match="infinite value at element 3" if binary
                       else "value overflows FP32 at element 3"):
        v2.parse_infer_request(body, fraud.manifest, header_length=size)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_missing_values_where_the_model_takes_them(fraud, iris, binary) -> None:
    """NaN (binary) / null (JSON) is "missing": passed where allowed, refused naming the
    feature where not."""
    x = np.ones((2, 15), np.float32)
    x[1, 4] = np.nan
    if binary:
        inputs = [_inp("input", x, "FP32", True)]
    else:
        inputs = [{"name": "input", "datatype": "FP32", "shape": [2, 15],
                   "data": [None if np.isnan(v) else float(v) for v in x.ravel()]}]
    body, size = _body(inputs) if binary else _json_body(inputs)
    req = v2.parse_infer_request(body, fraud.manifest, header_length=size)
    got = fraud.run(req.feeds)
    want = fraud.predict(x.astype(np.float64))
    assert got.probabilities is not None and want.probabilities is not None
    assert np.array_equal(got.probabilities, want.probabilities)
    assert iris.manifest.missing_values == "none"
    y = np.ones((1, 4), np.float32)
    y[0, 3] = np.nan
    if binary:
        inputs = [_inp("input", y, "FP32", True)]
    else:
        inputs = [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                   "data": [1.0, 1.0, 1.0, None]}]
    body, size = _body(inputs) if binary else _json_body(inputs)
    with pytest.raises(BadRequestError) as info:
        v2.parse_infer_request(body, iris.manifest, header_length=size)
    assert ("missing value (NaN / null) at element 3 (feature 'petal_width')" in info.value.message
            if binary else "does not accept missing values" in info.value.message)


@pytest.mark.parametrize(
    "case, fragment",
    [
        ("short", "needs 60"),
        ("overrun", "runs past the end"),
        ("trailing", "not claimed"),
        ("both", "either 'data' or binary_data_size"),
        ("header_text", "must be an integer"),
        ("header_big", "but the body has"),
    ],
)
def test_malformed_binary_requests_are_400(fraud, case: str, fragment: str) -> None:
    raw = np.zeros(15, "<f4").tobytes()
    header: str | int | None
    if case == "short":
        body, header = _binary_req(raw[:-4])
    elif case == "overrun":
        body, header = _binary_req(raw, size=64)
    elif case == "trailing":
        body, header = _binary_req(raw, trailer=b"\0\0\0\0")
    elif case == "both":
        body, header = _binary_req(raw, data=ROW)
    elif case == "header_text":
        body, _ = _binary_req(raw)
        header = "12a"
    else:
        body, _ = _binary_req(raw)
        header = len(body) + 1
    with pytest.raises(BadRequestError, match=fragment):
        v2.parse_infer_request(body, fraud.manifest, header_length=header)


def _bytes_tensor(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


@pytest.mark.parametrize(
    "raw, fragment",
    [
        (_bytes_tensor(b"Oslo", b"\xff\xfe"), "not valid UTF-8"),
        (_bytes_tensor(b"Oslo") + b"\x05\0", "ends inside element 1"),
        (_bytes_tensor(b"Oslo") + struct.pack("<I", 99) + b"ab", "runs past"),
        (_bytes_tensor(b"Oslo", b"Paris", b"x"), "beyond 2 elements"),
    ],
)
def test_malformed_binary_bytes_are_400(mixed, raw: bytes, fragment: str) -> None:
    x = np.array([[0.1], [0.2]], "<f4").tobytes()
    head = orjson.dumps({"inputs": [
        {"name": "x", "datatype": "FP32", "shape": [2, 1], "parameters": {"binary_data_size": 8}},
        {"name": "city", "datatype": "BYTES", "shape": [2, 1],
         "parameters": {"binary_data_size": len(raw)}},
    ]})
    with pytest.raises(BadRequestError, match=fragment):
        v2.parse_infer_request(head + x + raw, mixed.manifest, header_length=len(head))


def test_rows_over_the_limit_are_refused_before_decoding(fraud) -> None:
    body = _json_req([[0.5] * 15] * 3, shape=(3, 15))
    assert v2.parse_infer_request(body, fraud.manifest, max_rows=3).rows == 3
    with pytest.raises(BadRequestError, match="3 rows exceed this server's limit of 2"):
        v2.parse_infer_request(body, fraud.manifest, max_rows=2)


def test_huge_bytes_shape_is_refused_before_allocating(mixed) -> None:
    raw = _bytes_tensor(b"Oslo")
    head = orjson.dumps({"inputs": [
        {"name": "city", "datatype": "BYTES", "shape": [10**9, 1],
         "parameters": {"binary_data_size": len(raw)}},
        {"name": "x", "datatype": "FP32", "shape": [10**9, 1], "data": [0.5]},
    ]})
    with pytest.raises(BadRequestError, match="too small for 1000000000 BYTES elements"):
        v2.parse_infer_request(head + raw, mixed.manifest, header_length=len(head))


def test_inputs_must_agree_on_batch_and_all_be_present(mixed) -> None:
    base = {"name": "x", "datatype": "FP32", "shape": [2, 1], "data": [0.1, 0.2]}
    city = {"name": "city", "datatype": "BYTES", "shape": [1, 1], "data": ["Oslo"]}
    with pytest.raises(BadRequestError, match="disagree on the batch size"):
        v2.parse_infer_request(orjson.dumps({"inputs": [base, city]}), mixed.manifest)
    with pytest.raises(BadRequestError, match=r"missing input\(s\) \['city'\]"):
        v2.parse_infer_request(orjson.dumps({"inputs": [base]}), mixed.manifest)
    city = {"name": "city", "datatype": "BYTES", "shape": [2, 1], "data": ["Oslo", 3]}
    with pytest.raises(BadRequestError, match="cannot hold integer"):
        v2.parse_infer_request(orjson.dumps({"inputs": [base, city]}), mixed.manifest)


def test_error_messages_carry_no_internals(fraud) -> None:
    with pytest.raises(BadRequestError) as info:
        v2.parse_infer_request(b"\xff\xfe garbage", fraud.manifest)
    assert "Traceback" not in info.value.message and "/" not in info.value.message.split(":")[0]


# --- properties ------------------------------------------------------------------------------

_finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(x=st.integers(1, 6).flatmap(lambda n: arrays(np.float32, (n, 15), elements=_finite32)))
def test_json_binary_and_rows_give_identical_feeds(fraud, x: np.ndarray) -> None:
    ref = fraud.to_feeds(x.astype(np.float64))["input"]
    for binary in (False, True):
        body, size = _body([_inp("input", x, "FP32", binary)])
        got = v2.parse_infer_request(body, fraud.manifest, header_length=size).feeds["input"]
        assert got.dtype == np.float32 and got.shape == x.shape
        assert np.array_equal(got, ref)


@settings(max_examples=40, deadline=None)
@given(words=st.lists(st.text(max_size=12), min_size=1, max_size=5))
def test_bytes_round_trip_any_unicode(mixed, words: list[str]) -> None:
    n = len(words)
    cities = np.array(words, dtype=object).reshape(n, 1)
    xs = np.zeros((n, 1), np.float32)
    for binary in (False, True):
        body, size = _body([_inp("x", xs, "FP32", binary), _inp("city", cities, "BYTES", binary)])
        feeds = v2.parse_infer_request(body, mixed.manifest, header_length=size).feeds
        assert feeds["city"].reshape(-1).tolist() == words


# --- every manifest dtype through JSON and binary --------------------------------------------


def _manifest(dtype: str, width: int = 3):
    from packserve.bundle import FeatureSpec, Manifest, OutputSpec, ParityReport, TensorSpec

    names = [f"f{i}" for i in range(width)]
    return Manifest(
        name="m", task="regression",
        features=[FeatureSpec(name=n, dtype=dtype) for n in names],
        inputs=[TensorSpec(name="t", dtype=dtype, shape=[None, width], features=names)],
        outputs=OutputSpec(task="regression", postprocess="identity", value_output="y", names=["y"]),
        framework="test", framework_version="0", model_type="test",
        parity=ParityReport(rows=0, tolerance=0.0, passed=True),
    )


@pytest.mark.parametrize(
    "dtype, datatype, arr",
    [
        ("float64", "FP64", np.array([[1e300, -2.5, 1 / 3]], np.float64)),
        ("float32", "FP32", np.array([[3.4e38, -1.5, 0.1]], np.float32)),
        ("int64", "INT64", np.array([[2**62, -(2**63), 7]], np.int64)),
        ("int32", "INT32", np.array([[2**31 - 1, -(2**31), 0]], np.int32)),
        ("bool", "BOOL", np.array([[True, False, True]], np.bool_)),
    ],
)
@pytest.mark.parametrize("binary", [False, True])
def test_every_numeric_dtype_round_trips(dtype: str, datatype: str, arr: np.ndarray, binary: bool) -> None:
    m = _manifest(dtype)
    assert v2.model_metadata(m)["inputs"] == [{"name": "t", "datatype": datatype, "shape": [-1, 3]}]
    body, size = _body([_inp("t", arr, datatype, binary)])
    got = v2.parse_infer_request(body, m, header_length=size).feeds["t"]
    assert got.dtype == arr.dtype and np.array_equal(got, arr)


@pytest.mark.parametrize(
    "dtype, data, fragment",
    [
        ("int32", [2**31, 0, 0], "out of the INT32 range"),
        ("int64", [2**63, 0, 0], "out of the INT64 range"),
        ("int64", [1.0, 0, 0], "cannot hold decimal number"),
        ("bool", [1, 0, 1], "cannot hold integer"),
        ("float64", [True, 0.0, 1.0], "cannot hold boolean"),
    ],
)
def test_json_values_must_fit_the_datatype(dtype: str, data: list, fragment: str) -> None:
    m = _manifest(dtype)
    datatype = v2.input_metadata(m)[0].datatype
    body = orjson.dumps({"inputs": [{"name": "t", "datatype": datatype, "shape": [1, 3], "data": data}]})
    with pytest.raises(BadRequestError, match=fragment):
        v2.parse_infer_request(body, m)


def test_binary_bool_must_be_zero_or_one() -> None:
    m = _manifest("bool")
    head = orjson.dumps({"inputs": [{"name": "t", "datatype": "BOOL", "shape": [1, 3],
                                     "parameters": {"binary_data_size": 3}}]})
    with pytest.raises(BadRequestError, match="0 or 1"):
        v2.parse_infer_request(head + b"\x01\x00\x02", m, header_length=len(head))

"""Tensor bundles over HTTP (issue #16): N-D JSON in, named outputs out, exact 422s and schemas.

A real ``packserve serve`` process serves a repository holding a two-input tensor model
(int64 token ids with a variable sequence axis + a float image) and an image classifier.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

import packserve
from helpers.server import Server, running_server
from helpers.tensor_bundles import VOCAB


@pytest.fixture(scope="module")
def tensor_repo(tmp_path_factory: pytest.TempPathFactory, two_input_bundle: Path,
                image_clf_bundle: Path) -> Path:
    repo = tmp_path_factory.mktemp("tensor_repo")
    shutil.copytree(two_input_bundle, repo / "two" / "1")
    shutil.copytree(image_clf_bundle, repo / "clf" / "1")
    return repo


@pytest.fixture(scope="module")
def srv(tensor_repo: Path) -> Iterator[Server]:
    with running_server(tensor_repo, "--max-batch", "32") as s:
        yield s


def _x(n: int, seq: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"tokens": rng.integers(0, VOCAB, (n, seq)),
            "image": rng.normal(size=(n, 3, 4, 4)).astype(np.float32)}


def _instances(x: dict[str, np.ndarray]) -> list[dict[str, object]]:
    n = len(x["tokens"])
    return [{"inputs": {k: v[i].tolist() for k, v in x.items()}} for i in range(n)]


def test_single_and_batch_equal_the_python_api(srv: Server, two_input_bundle: Path) -> None:
    local = packserve.load(two_input_bundle)
    x = _x(5)
    ref = local.predict(x).outputs
    r = httpx.post(f"{srv.url}/models/two/predict", json=_instances(x)[0])
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body["outputs"]) == {"emb", "pooled"} and body["model_version"] == "1"
    assert np.allclose(body["outputs"]["emb"], ref["emb"][0], atol=1e-6)
    r = httpx.post(f"{srv.url}/models/two/predict/batch", json={"instances": _instances(x)})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["batch_size"] == 5
    for k in ("emb", "pooled"):
        assert np.allclose([p["outputs"][k] for p in got["predictions"]], ref[k], atol=1e-6)


def test_classifier_with_bare_array_input(srv: Server, image_clf_bundle: Path) -> None:
    img = np.random.default_rng(2).normal(size=(3, 3, 4, 4))
    ref = packserve.load(image_clf_bundle).predict(img)
    r = httpx.post(f"{srv.url}/models/clf/predict", json={"inputs": img[0].tolist()})
    assert r.status_code == 200, r.text
    assert r.json()["prediction"] == ref.labels[0]
    assert r.json()["probabilities"]["cat"] == pytest.approx(ref.probabilities[0, 0], abs=1e-6)
    r = httpx.post(f"{srv.url}/models/clf/predict/batch",
                   json={"instances": [{"inputs": {"image": i.tolist()}} for i in img]})
    assert [p["prediction"] for p in r.json()["predictions"]] == ref.labels.tolist()


def _err(srv: Server, path: str, body: object) -> tuple[int, dict[str, str]]:
    r = httpx.post(f"{srv.url}{path}", json=body)
    return r.status_code, r.json()


def test_bad_inputs_get_422_naming_input_instance_and_axis(srv: Server) -> None:
    inst = _instances(_x(5))
    bad = [dict(i, inputs=dict(i["inputs"])) for i in inst]  # type: ignore[call-overload]
    bad[3]["inputs"]["image"] = np.zeros((3, 4, 3)).tolist()
    status, body = _err(srv, "/models/two/predict/batch", {"instances": bad})
    assert status == 422
    assert body["message"] == "input 'image', instance 3: axis 3 has 3 values, expected 4"
    assert body["where"] == "input 'image', instance 3"

    bad = [dict(i, inputs=dict(i["inputs"])) for i in inst]  # type: ignore[call-overload]
    bad[2]["inputs"]["tokens"] = bad[2]["inputs"]["tokens"] + [1]
    status, body = _err(srv, "/models/two/predict/batch", {"instances": bad})
    assert status == 422 and body["message"].startswith(
        "input 'tokens', instance 2: axis 1 has 6 values, expected 5 (a variable axis")

    cases = [
        ({"tokens": [1, 2, VOCAB], "image": inst[0]["inputs"]["image"]},  # type: ignore[index]
         r"input 'tokens': must be within \[0, 49\] .* at position \[2\]"),
        ({"tokens": [1, 2.5, 3], "image": inst[0]["inputs"]["image"]},  # type: ignore[index]
         "input 'tokens': values must be an integer \\(int64\\), got a decimal number"),
        ({"tokens": [1, True, 3], "image": inst[0]["inputs"]["image"]},  # type: ignore[index]
         "got a boolean"),
        ({"tokens": [1, 2], "image": [[["x"] * 4] * 4] * 3},
         "input 'image': values must be a number \\(float32\\), got a string"),
        ({"tokens": [1, 2], "image": [[1.0] * 4] * 4},
         "input 'image': axis 1 has 4 values, expected 3"),
        ({"tokens": [[1, 2]], "image": inst[0]["inputs"]["image"]},  # type: ignore[index]
         "input 'tokens': has more axes than the model's 2"),
        ({"tokens": [1, 2]}, r"missing input\(s\) \['image'\]"),
        ({"tokens": [1, 2], "image": [], "x": 1}, "unknown input 'x'"),
        ({"tokens": [1, 2], "image": [[[1e39] * 4] * 4] * 3}, "overflows float32"),
    ]
    import re

    for inputs, message in cases:
        status, body = _err(srv, "/models/two/predict", {"inputs": inputs})
        assert status == 422, (inputs, body)
        assert re.search(message, body["message"]), (message, body)
    status, body = _err(srv, "/models/two/predict", {"features": [1, 2]})
    assert status == 422 and '{"inputs": ...}' in body["message"]
    status, body = _err(srv, "/models/two/predict", {"inputs": [1, 2]})
    assert status == 422 and "keyed by input name" in body["message"]


def test_batcher_merges_only_requests_whose_axes_agree(srv: Server, two_input_bundle: Path) -> None:
    """Concurrent single requests with different sequence lengths all get their own answer."""
    local = packserve.load(two_input_bundle)
    jobs = [(_x(1, seq=3 + (i % 4), seed=i)) for i in range(24)]

    def call(x: dict[str, np.ndarray]) -> list[float]:
        r = httpx.post(f"{srv.url}/models/two/predict", json=_instances(x)[0], timeout=30)
        assert r.status_code == 200, r.text
        out: list[float] = r.json()["outputs"]["emb"]
        return out

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(call, jobs))
    for x, emb in zip(jobs, got, strict=True):
        assert np.allclose(emb, local.predict(x).outputs["emb"][0], atol=1e-6)


def test_openapi_describes_nested_arrays_exactly(srv: Server) -> None:
    from openapi_spec_validator import validate

    doc = httpx.get(f"{srv.url}/openapi.json").json()
    validate(doc)
    schemas = doc["components"]["schemas"]

    def deref(s: dict[str, object]) -> dict[str, object]:
        ref = s.get("$ref")
        return schemas[str(ref).rsplit("/", 1)[1]] if ref else s

    op = doc["paths"]["/models/two/predict"]["post"]
    req = deref(op["requestBody"]["content"]["application/json"]["schema"])
    inputs = deref(req["properties"]["inputs"])  # type: ignore[index]
    assert inputs["required"] == ["tokens", "image"] and inputs["additionalProperties"] is False
    image = inputs["properties"]["image"]  # type: ignore[index]
    sizes = []
    node = image
    while node.get("type") == "array":
        sizes.append((node.get("minItems"), node.get("maxItems")))
        node = node["items"]
    assert sizes == [(3, 3), (4, 4), (4, 4)] and node["type"] == "number"
    tokens = inputs["properties"]["tokens"]  # type: ignore[index]
    assert "minItems" not in tokens and tokens["items"] == {"type": "integer", "minimum": 0,
                                                            "maximum": VOCAB - 1}
    resp = deref(op["responses"]["200"]["content"]["application/json"]["schema"])
    outs = deref(resp["properties"]["outputs"])  # type: ignore[index]
    assert outs["properties"]["emb"]["maxItems"] == 4  # type: ignore[index]
    clf = doc["paths"]["/models/clf/predict"]["post"]
    creq = deref(clf["requestBody"]["content"]["application/json"]["schema"])
    assert len(creq["properties"]["inputs"]["anyOf"]) == 2  # type: ignore[index]  # by name or bare
    cresp = deref(clf["responses"]["200"]["content"]["application/json"]["schema"])
    assert cresp["properties"]["prediction"]["enum"] == ["cat", "dog", "eel"]  # type: ignore[index]


def test_compute_groups_parts_by_their_non_batch_axes(two_input_bundle: Path) -> None:
    from packserve.serve.batching.execute import compute

    p = packserve.load(two_input_bundle)
    parts = [p.to_feeds(_x(n, seq=s, seed=i)) for i, (n, s) in enumerate([(2, 3), (1, 5), (3, 3), (1, 5)])]
    before = p.calls
    out = compute(p.run, parts, [2, 1, 3, 1])
    assert out.error is None and p.calls - before == 2  # two shapes -> two model calls
    for part, res in zip(parts, out.results, strict=True):
        assert np.array_equal(res.outputs["emb"], p.run(part).outputs["emb"])  # type: ignore[index]


@pytest.mark.parametrize("binary", [False, True])
def test_v2_tritonclient_equals_the_python_api(srv: Server, two_input_bundle: Path, binary: bool) -> None:
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    c = httpclient.InferenceServerClient(srv.url.removeprefix("http://"))
    meta = c.get_model_metadata("two")
    assert {i["name"]: (i["datatype"], i["shape"]) for i in meta["inputs"]} == {
        "tokens": ("INT64", [-1, -1]), "image": ("FP32", [-1, 3, 4, 4])}
    assert {o["name"]: o["shape"] for o in meta["outputs"]} == {"emb": [-1, 4], "pooled": [-1, 3]}
    x = _x(6, seq=7, seed=9)
    ref = packserve.load(two_input_bundle).predict(x).outputs
    inputs = []
    for name, dtype in (("tokens", "INT64"), ("image", "FP32")):
        t = httpclient.InferInput(name, list(x[name].shape), dtype)
        t.set_data_from_numpy(x[name], binary_data=binary)
        inputs.append(t)
    outs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("emb", "pooled")]
    res = c.infer("two", inputs, outputs=outs)
    for n in ("emb", "pooled"):
        assert np.array_equal(res.as_numpy(n), ref[n])  # type: ignore[index]
    bad = x["tokens"].copy()
    bad[4, 1] = VOCAB
    inputs[0].set_data_from_numpy(bad, binary_data=binary)
    with pytest.raises(InferenceServerException,
                       match=r"input 'tokens', instance 4: must be within \[0, 49\]"):
        c.infer("two", inputs, outputs=outs)
    c.close()

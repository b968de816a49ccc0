"""Image bundles through V2 (#17): encoded images as a BYTES input, driven by tritonclient.

The unmodified ``tritonclient.http`` client sends the images (binary tensor extension and
JSON base64) to a real ``packserve serve``; the probabilities equal the Python API on the
same bytes, and equal the V2 answer for the preprocessed tensor (clients that preprocess
themselves). Hostile inputs get the protocol's 400 (413 over the bundle's byte limit).
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from pictures import encode, picture
from tritonclient.utils import InferenceServerException

import packserve
from helpers.server import Server
from packserve.runtime.images import ImagePipeline


@pytest.fixture(scope="module")
def client(image_server: Server) -> Iterator[httpclient.InferenceServerClient]:
    c = httpclient.InferenceServerClient(image_server.url.removeprefix("http://"))
    yield c
    c.close()


def _blobs() -> list[bytes]:
    return [encode(picture(48, 64, 11), "JPEG", quality=90), encode(picture(90, 40, 12), "PNG"),
            encode(picture(33, 33, 13), "WEBP", lossless=True)]


def _infer(client: httpclient.InferenceServerClient, inp: httpclient.InferInput,
           binary_out: bool) -> httpclient.InferResult:
    outs = [httpclient.InferRequestedOutput(n, binary_data=binary_out)
            for n in ("label", "probabilities")]
    return client.infer("cnn", [inp], outputs=outs)


def test_metadata_lists_the_tensor_and_the_bytes_input(client: httpclient.InferenceServerClient) -> None:
    md = client.get_model_metadata("cnn")
    assert md["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]},
                            {"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert [o["name"] for o in md["outputs"]] == ["label", "probabilities"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json-base64"])
def test_bytes_input_equals_the_python_api(client: httpclient.InferenceServerClient,
                                           image_bundle: Path, binary: bool) -> None:
    blobs = _blobs()
    predictor = packserve.load(image_bundle)
    want = predictor.predict_images(blobs)
    decoded = ImagePipeline(predictor.manifest).tensor(blobs)  # the same decoded input
    assert want.probabilities is not None and want.labels is not None
    np.testing.assert_allclose(predictor.predict(decoded).probabilities, want.probabilities)
    if binary:  # Triton's usual shape for encoded images: [n, 1] of raw bytes
        inp = httpclient.InferInput("image", [3, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[b] for b in blobs], dtype=np.object_), binary_data=True)
    else:  # JSON cannot hold bytes: base64 strings, shape [n]
        inp = httpclient.InferInput("image", [3], "BYTES")
        inp.set_data_from_numpy(
            np.array([base64.b64encode(b).decode() for b in blobs], dtype=np.object_),
            binary_data=False,
        )
    res = _infer(client, inp, binary_out=binary)
    np.testing.assert_allclose(res.as_numpy("probabilities"), want.probabilities, atol=1e-6)
    labels = [v.decode() if isinstance(v, bytes) else v for v in res.as_numpy("label").tolist()]
    assert labels == want.labels.tolist()
    # a client that preprocessed itself sends the tensor: the same answer
    tensor = httpclient.InferInput("input", list(decoded.shape), "FP32")
    tensor.set_data_from_numpy(decoded.astype(np.float32), binary_data=True)
    np.testing.assert_allclose(_infer(client, tensor, binary_out=True).as_numpy("probabilities"),
                               want.probabilities, atol=1e-6)


def _bytes_body(elements: list[bytes], shape: list[int]) -> tuple[bytes, dict[str, str]]:
    blob = b"".join(struct.pack("<I", len(e)) + e for e in elements)
    doc = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": shape,
                       "parameters": {"binary_data_size": len(blob)}}]}
    header = json.dumps(doc).encode()
    return header + blob, {"Inference-Header-Content-Length": str(len(header)),
                           "content-type": "application/octet-stream"}


def test_hostile_v2_image_inputs_get_a_clear_4xx(client: httpclient.InferenceServerClient,
                                                 image_server: Server) -> None:
    jpeg, png, _ = _blobs()
    url = f"{image_server.url}/v2/models/cnn/infer"
    b64 = base64.b64encode(png).decode()
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, 3, 32, 32],
              "data": [0.0] * (3 * 32 * 32)}
    cases: list[tuple[str, dict[str, object], int, str]] = [
        ("bad base64", {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                    "data": ["%%% not base64"]}]}, 400, "not valid base64"),
        ("wrong datatype", {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1],
                                        "data": [1.0]}]}, 400, "BYTES"),
        ("not a string", {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                      "data": [7]}]}, 400, "element 0"),
        ("shape [n, 2]", {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1, 2],
                                      "data": [b64, b64]}]}, 400, "[n, 1]"),
        ("no images", {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [0],
                                   "data": []}]}, 400, "no images"),
        ("corrupt image", {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2],
                                       "data": [b64, base64.b64encode(jpeg[:200]).decode()]}]},
         400, "element 1"),
        ("not an image", {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                      "data": [base64.b64encode(b"hello").decode()]}]},
         400, "not a JPEG"),
        ("empty element", {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                       "data": [""]}]}, 400, "empty"),
        ("images and tensor", {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                           "data": [b64]}, tensor]}, 400, "not both"),
        ("over max_bytes", {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                        "data": [base64.b64encode(b"\x89PNG" + b"\0" * 2_100_000)
                                                 .decode()]}]}, 413, "exceeds"),
    ]
    with httpx.Client(timeout=30) as c:
        for name, body, status, text in cases:
            r = c.post(url, json=body)
            assert r.status_code == status, (name, r.text)
            assert text in r.json()["error"] and "Traceback" not in r.text, (name, r.text)
        # binary tensor extension: a length prefix that runs past the data, corrupt bytes
        body, headers = _bytes_body([png], [1])
        r = c.post(url, content=body[:-10] + struct.pack("<I", 99), headers=headers)
        assert r.status_code == 400, r.text
        body, headers = _bytes_body([png, jpeg[: len(jpeg) // 2]], [2, 1])
        r = c.post(url, content=body, headers=headers)
        assert r.status_code == 400 and "element 1" in r.json()["error"], r.text
        assert c.get(f"{image_server.url}/v2/health/ready").status_code == 200
    bad = httpclient.InferInput("image", [1], "BYTES")  # tritonclient surfaces the 400
    bad.set_data_from_numpy(np.array([b"GIF89a but not really"], dtype=np.object_), binary_data=True)
    with pytest.raises(InferenceServerException) as info:
        client.infer("cnn", [bad])
    assert info.value.status() == "400" and "element 0" in str(info.value.message())
    assert "unhandled error" not in image_server.output()

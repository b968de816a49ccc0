"""bench / locustfile inputs for tensor models (issue #16): every generated body is valid."""

from __future__ import annotations

import json
from pathlib import Path

import orjson

from helpers.tensor_bundles import VOCAB
from packserve.bench.inputs import Signature, build_bodies
from packserve.bench.inputs.tensors import from_v2_metadata
from packserve.bench.locustgen import locustfile_for
from packserve.bundle import read_manifest
from packserve.serve.payloads.tensor import TensorRequestDecoder


def test_bench_bodies_are_valid_requests(two_input_bundle: Path) -> None:
    sig = Signature.from_bundle(two_input_bundle)
    assert [t.name for t in sig.tensors] == ["tokens", "image"]
    assert sig.tensors[0].shape == (6,) and sig.tensors[0].high == VOCAB - 1  # sample length, range
    dec = TensorRequestDecoder(read_manifest(two_input_bundle), max_batch=64)
    singles = build_bodies(sig, batch_size=1, count=20)
    assert len(set(singles)) == 20
    for body in singles:
        feeds = dec.decode_single(orjson.loads(body))
        assert feeds["image"].shape == (1, 3, 4, 4) and feeds["tokens"].max() < VOCAB
    for body in build_bodies(sig, batch_size=8, count=3):
        assert dec.decode_batch(orjson.loads(body))["tokens"].shape == (8, 6)


def test_locustfile_sends_valid_tensor_instances(two_input_bundle: Path) -> None:
    src = locustfile_for(str(two_input_bundle))
    ns: dict[str, object] = {}
    # everything but the locust user class (importing locust monkey-patches the process)
    head = src.split("\n\nclass InferenceUser")[0].replace("from locust import HttpUser, between, task", "")
    exec(compile(head, "locustfile.py", "exec"), ns)  # noqa: S102 - our own generated file
    dec = TensorRequestDecoder(read_manifest(two_input_bundle), max_batch=64)
    for _ in range(10):
        inputs = ns["make_inputs"]()  # type: ignore[operator]
        dec.decode_single(json.loads(json.dumps({"inputs": inputs})))
    assert '{"inputs": make_row()}' in src and '"features"' not in src.split("class InferenceUser")[1]


def test_v2_metadata_gives_tensor_inputs() -> None:
    meta = {"inputs": [{"name": "tokens", "datatype": "INT64", "shape": [-1, -1]},
                       {"name": "image", "datatype": "FP32", "shape": [-1, 3, 4, 4]}]}
    got = from_v2_metadata(meta)
    assert [(t.name, t.dtype, t.shape) for t in got] == [("tokens", "int64", (1,)),
                                                         ("image", "float32", (3, 4, 4))]
    assert (got[0].low, got[0].high) == (0, 1)  # no range in V2 metadata: ids any model accepts


def test_bench_without_bundle_reads_a_tensor_model_from_v2(two_input_bundle: Path) -> None:
    from helpers.server import running_server
    from packserve.bench.inputs import resolve_signature

    with running_server(two_input_bundle) as srv:
        sig = resolve_signature(srv.url)  # no --model, no --bundle: the default model via V2
    assert [t.name for t in sig.tensors] == ["tokens", "image"] and "/v2/models/" in sig.source

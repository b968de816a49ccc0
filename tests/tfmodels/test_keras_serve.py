"""Keras bundles served over HTTP by a real ``packserve serve`` (issue #18): /predict and the
V2 protocol answer what the Keras model answers (within 1e-5), for every model kind and for
bundles packed from the object and from the ``.keras`` file."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from tf_zoo import KINDS, KerasZoo

from helpers.server import Server, running_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def srv(keras_zoo: KerasZoo) -> Iterator[Server]:
    with running_server(keras_zoo.root, timeout=120) as server:
        yield server


def _instance(sample: object, i: int) -> dict[str, object]:
    if isinstance(sample, dict):
        return {"inputs": {k: np.asarray(v)[i].tolist() for k, v in sample.items()}}
    row = np.asarray(sample)[i]
    if row.ndim == 1:  # a table model takes feature rows
        return {"features": row.tolist()}
    return {"inputs": row.tolist()}


def _expected(kind: str, native_row: np.ndarray) -> tuple[str, np.ndarray]:
    if kind == "regressor":
        return "value", native_row.reshape(-1)
    if native_row.shape[0] == 1:
        return "probabilities", np.array([1 - native_row[0], native_row[0]])
    return "probabilities", native_row


@pytest.mark.parametrize("source", ["obj", "file"])
def test_predict_matches_keras(srv: Server, keras_zoo: KerasZoo, source: str) -> None:
    for kind in KINDS:
        case = keras_zoo.cases[kind]
        for i in (0, 3):
            r = httpx.post(f"{srv.url}/models/{kind}-{source}/predict",
                           json=_instance(case.sample, i), timeout=30)
            assert r.status_code == 200, (kind, r.text)
            body = r.json()
            field, want = _expected(kind, case.native[i])
            if field == "value":
                got = np.asarray(body["prediction"], dtype=np.float64).reshape(-1)
            else:
                got = np.array([body["probabilities"][str(c)] for c in range(len(want))])
                assert body["prediction"] == int(np.argmax(want)), kind
            assert np.max(np.abs(got - want)) <= 1e-5, (kind, source, got, want)


def test_v2_infer_matches_keras(srv: Server, keras_zoo: KerasZoo) -> None:
    for kind in KINDS:
        case = keras_zoo.cases[kind]
        name = f"{kind}-obj"
        meta = httpx.get(f"{srv.url}/v2/models/{name}", timeout=30).json()
        sample = case.sample if isinstance(case.sample, dict) else {
            meta["inputs"][0]["name"]: case.sample}
        inputs = [{"name": k, "datatype": "FP32", "shape": list(np.asarray(v)[:4].shape),
                   "data": np.asarray(v)[:4].reshape(-1).tolist()} for k, v in sample.items()]
        r = httpx.post(f"{srv.url}/v2/models/{name}/infer", json={"inputs": inputs}, timeout=30)
        assert r.status_code == 200, (kind, r.text)
        outs = {o["name"]: o for o in r.json()["outputs"]}
        native = case.native[:4]
        if kind == "regressor":
            assert set(outs) == {"value"}
            got, want = np.asarray(outs["value"]["data"]), native.reshape(-1)
        else:
            assert set(outs) == {"label", "probabilities"}
            probs = (np.concatenate([1 - native, native], axis=1) if native.shape[1] == 1
                     else native)
            got = np.asarray(outs["probabilities"]["data"]).reshape(probs.shape)
            want = probs
            assert outs["label"]["data"] == np.argmax(probs, axis=1).tolist()
        assert np.max(np.abs(got - want)) <= 1e-5, kind

"""V2 routes in-process (no subprocess): shapes the fixtures' models do not have."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest


def _multi_output_regressor(out: Path) -> Path:
    """A real ONNX regressor with three outputs per row: y = x @ W."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from packserve.bundle import (
        FeatureSpec,
        Manifest,
        OutputSpec,
        ParityReport,
        TensorSpec,
        prepare_output_dir,
        write_bundle,
    )

    w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "multi",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    staging = prepare_output_dir(out, force=True)
    onnx.save(model, str(staging / "model.onnx"))
    names = ["a", "b", "c", "d"]
    manifest = Manifest(
        name="multi", task="regression",
        features=[FeatureSpec(name=n) for n in names],
        inputs=[TensorSpec(name="x", dtype="float32", shape=[None, 4], features=names)],
        outputs=OutputSpec(task="regression", postprocess="identity", value_output="y", names=["y"]),
        framework="onnx", framework_version=onnx.__version__, model_type="MatMul",
        parity=ParityReport(rows=0, tolerance=0.0, passed=True), examples=[[1.0, 2.0, 3.0, 4.0]],
    )
    return write_bundle(staging, out, manifest)


@pytest.fixture(scope="module")
def multi_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _multi_output_regressor(tmp_path_factory.mktemp("v2app") / "multi")


def test_multi_output_regressor_metadata_and_infer(multi_bundle: Path) -> None:
    from packserve.serve.app import create_app
    from packserve.serve.settings import ServeSettings

    async def main() -> None:
        app = create_app(ServeSettings(model_path=multi_bundle))
        await app.state.registry.load_all()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as c:
            md = (await c.get("/v2/models/multi")).json()
            assert md["outputs"] == [{"name": "value", "datatype": "FP64", "shape": [-1, 3]}]
            x = [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]]
            r = await c.post("/v2/models/multi/infer", json={"inputs": [
                {"name": "x", "datatype": "FP32", "shape": [2, 4], "data": x}]})
            out = r.json()["outputs"][0]
            assert out["shape"] == [2, 3]
            want = (np.asarray(x, np.float32) @ (np.arange(12, dtype=np.float32).reshape(4, 3) / 10))
            assert np.allclose(np.reshape(out["data"], (2, 3)), want)
            ref = (await c.post("/models/multi/predict/batch", json={"instances": [
                {"features": row} for row in x]})).json()["predictions"]
            assert np.reshape(out["data"], (2, 3)).tolist() == [p["prediction"] for p in ref]
        app.state.registry.close()

    asyncio.run(main())


def test_fastapi_route_and_gateway_answer_alike(chapter_bundle: Path, chapter_data) -> None:
    """The gateway serves /v2/.../infer itself; the FastAPI route (OpenAPI, and any app mounted
    without the gateway) runs the same infer path and must answer byte for byte alike."""
    from fastapi import FastAPI

    from packserve.serve.app import create_app
    from packserve.serve.settings import ServeSettings

    async def main() -> None:
        app = create_app(ServeSettings(model_path=chapter_bundle))
        await app.state.registry.load_all()

        async def bare(scope, receive, send):  # FastAPI's own stack, no packserve gateway
            await FastAPI.__call__(app, scope, receive, send)

        x = chapter_data.x_test[:3].astype(np.float32)
        raw = x.tobytes()
        head = (b'{"id":"a","inputs":[{"name":"input","datatype":"FP32","shape":[3,15],'
                b'"parameters":{"binary_data_size":%d}}],"parameters":{"binary_data_output":true}}'
                % len(raw))
        headers = {"Inference-Header-Content-Length": str(len(head))}
        answers = []
        for asgi in (app, bare):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                                         base_url="http://app") as c:
                r = await c.post("/v2/models/fraud/infer", content=head + raw, headers=headers)
                bad = await c.post("/v2/models/fraud/versions/nope/infer", content=b"{}")
                assert r.status_code == 200 and bad.status_code == 404
                answers.append((r.content, r.headers["inference-header-content-length"],
                                r.headers["content-type"], bad.json()))
        assert answers[0] == answers[1]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://app") as c:
            paths = (await c.get("/openapi.json")).json()["paths"]
        assert "post" in paths["/v2/models/{name}/infer"]
        assert "get" in paths["/v2/models/{name}/versions/{version}/ready"]
        app.state.registry.close()

    asyncio.run(main())

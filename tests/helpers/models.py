"""Test models built on the spot: a deliberately slow real ONNX model, example rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def example(bundle: Path) -> list:
    """The first example row stored in a bundle's manifest."""
    return json.loads((bundle / "packserve.json").read_text())["examples"][0]


def make_slow_bundle(out: Path, *, width: int = 1024, layers: int = 48, name: str = "slow",
                     version: str = "1.0.0", features: int = 4) -> Path:
    """A real ONNX regression model that is slow on purpose: ``layers`` dense ``width``x``width``
    layers sharing one weight matrix (small file, ~width^2*layers MACs per row), over
    ``features`` inputs named a, b, c, ... (benchmarks/bench_batching.py uses it too)."""
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

    rng = np.random.default_rng(1)
    w_in = (rng.standard_normal((features, width)) / 2).astype(np.float32)
    w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    w_out = (rng.standard_normal((width, 1)) / np.sqrt(width)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w_in"], ["h0"])]
    for i in range(layers):
        nodes.append(helper.make_node("MatMul", [f"h{i}", "w"], [f"m{i}"]))
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [f"h{i + 1}"]))
    nodes.append(helper.make_node("MatMul", [f"h{layers}", "w_out"], ["y"]))
    graph = helper.make_graph(
        nodes, "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
        initializer=[numpy_helper.from_array(a, n) for a, n in ((w_in, "w_in"), (w, "w"), (w_out, "w_out"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    staging = prepare_output_dir(out, force=True)
    onnx.save(model, str(staging / "model.onnx"))
    names = [chr(ord("a") + i) for i in range(features)]
    manifest = Manifest(
        name=name, version=version, task="regression",
        features=[FeatureSpec(name=n) for n in names],
        inputs=[TensorSpec(name="x", dtype="float32", shape=[None, features], features=names)],
        outputs=OutputSpec(task="regression", postprocess="identity", value_output="y", names=["y"]),
        framework="onnx", framework_version=onnx.__version__, model_type="SlowMLP",
        parity=ParityReport(rows=0, tolerance=0.0, passed=True, notes=["test model"]),
        examples=[[round(0.1 * (i + 1), 1) for i in range(features)]],
    )
    return write_bundle(staging, out, manifest)

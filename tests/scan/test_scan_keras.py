"""Keras files scanned without TensorFlow (issue #18 item 3): the configs are written here by
hand in the formats Keras 3 (``.keras`` zip) and Keras 2 (``.h5`` ``model_config``) save."""

from __future__ import annotations

import base64
import io
import json
import marshal
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from packserve.errors import ExitCode
from packserve.scan import scan, scan_bytes
from packserve.scan.keras import HDF5_MAGIC, KERAS_CLASSES, judge_config
from packserve.scan.scanner import Scanner

WEIGHTS = HDF5_MAGIC + bytes(512)  # raw arrays for the scanner: never parsed, CRC-checked


def obj(module: str, cls: str, config: Any, registered: str | None = None) -> dict[str, Any]:
    return {"module": module, "class_name": cls, "config": config, "registered_name": registered}


def dense(**extra: Any) -> dict[str, Any]:
    init = obj("keras.initializers", "GlorotUniform", {"seed": None})
    return obj("keras.layers", "Dense", {"units": 2, "activation": "relu",
                                         "kernel_initializer": init, **extra})


def sequential(*layers: dict[str, Any]) -> dict[str, Any]:
    model = obj("keras", "Sequential", {"name": "seq", "layers": [
        obj("keras.layers", "InputLayer", {"batch_shape": [None, 4]}), *layers]})
    model["compile_config"] = {"optimizer": obj("keras.optimizers", "Adam", {"learning_rate": 0.001}),
                               "loss": obj("keras.losses", "MeanSquaredError", {})}
    return model


def keras_zip(config: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.3.3", "date_saved": "x"}))
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("model.weights.h5", WEIGHTS)
    return buf.getvalue()


def rules(data: bytes) -> set[str]:
    return {f.rule for f in scan_bytes(data, "m.keras").findings}


def test_a_clean_keras_file_is_clean() -> None:
    report = scan_bytes(keras_zip(sequential(dense(), dense())), "m.keras")
    assert report.clean and report.exit_code == ExitCode.OK, report.to_dict()
    assert report.files["m.keras"] == "keras" and report.not_pickle == []


def test_lambda_layers_are_critical() -> None:
    code = base64.b64encode(marshal.dumps((lambda x: x).__code__)).decode()
    keras3 = obj("keras.layers", "Lambda", {"function": {"class_name": "__lambda__",
                                                        "config": {"code": code}}})
    report = scan_bytes(keras_zip(sequential(dense(), keras3)), "m.keras")
    (f, *_) = report.findings
    assert f.rule == "keras-lambda" and f.severity == "critical" and f.member == "config.json"
    assert report.exit_code == ExitCode.UNSAFE


def test_custom_objects_and_registered_functions_are_findings() -> None:
    custom = obj("my_project.layers", "MyLayer", {"units": 3}, "my_project>MyLayer")
    assert "keras-custom-object" in rules(keras_zip(sequential(custom)))
    evil_fn = dense(activation=obj("os", "function", "system", "function"))
    report = scan_bytes(keras_zip(sequential(evil_fn)), "m.keras")
    (f,) = report.findings
    assert (f.rule, f.severity) == ("keras-function", "critical") and "os.system" in f.reason
    own_fn = dense(activation=obj("__main__", "function", "swishy", "function"))
    assert "keras-function" in rules(keras_zip(sequential(own_fn)))
    keras_fn = dense(activation=obj("keras.src.activations.activations", "function", "relu", "relu"))
    assert rules(keras_zip(sequential(keras_fn))) == set()


def test_legacy_keras2_configs() -> None:
    def judged(config: dict[str, Any]) -> list[str]:
        s = Scanner()
        from packserve.scan.context import Ctx

        judge_config(s, json.dumps(config).encode(), Ctx("m.h5"))
        return [f.rule for f in s.report.findings] + [e.reason for e in s.report.errors]

    layer = {"class_name": "Dense", "config": {"units": 2, "kernel_initializer": {
        "class_name": "GlorotUniform", "config": {"seed": None}}}}
    model = {"class_name": "Sequential", "config": {"name": "s", "layers": [layer]}}
    assert judged(model) == []
    lam = {"class_name": "Lambda", "config": {"function": ["4wEAAAAAAAAA", None, None],
                                              "function_type": "lambda"}}
    assert judged({"class_name": "Sequential", "config": {"layers": [layer, lam]}}) == ["keras-lambda"]
    mine = {"class_name": "AttentionPooling", "config": {"units": 4}}
    assert judged({"class_name": "Sequential", "config": {"layers": [mine]}}) == ["keras-custom-object"]
    assert judged({"class_name": "Custom>Thing", "config": {}}) == ["keras-custom-object"]
    assert {"Sequential", "Dense", "Adam", "GlorotUniform"} <= KERAS_CLASSES
    broken = Scanner()
    from packserve.scan.context import Ctx

    judge_config(broken, b"{not json", Ctx("x"))
    assert broken.report.errors and broken.report.exit_code == ExitCode.SCAN_INCOMPLETE


def test_h5_without_h5py_could_not_be_scanned(tmp_path: Path) -> None:
    f = tmp_path / "model.h5"
    f.write_bytes(WEIGHTS)
    code = (
        "import sys, json\nsys.modules['h5py'] = None  # as if not installed\n"
        "from packserve.scan import scan\n"
        f"r = scan({str(f)!r})\nprint(json.dumps([int(r.exit_code), r.errors[0].reason]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    exit_code, reason = json.loads(out.stdout)
    assert exit_code == ExitCode.SCAN_INCOMPLETE and "h5py is not installed" in reason


def test_h5_model_config_is_judged_with_h5py(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py", reason="h5py is an optional dependency")
    lam = {"class_name": "Lambda", "config": {"function": ["4wEAAAAAAAAA", None, None]}}
    for name, layers, expected in (("ok.h5", [], ExitCode.OK), ("lam.h5", [lam], ExitCode.UNSAFE)):
        path = tmp_path / name
        with h5py.File(path, "w") as h5:
            h5.attrs["model_config"] = json.dumps({"class_name": "Sequential",
                                                   "config": {"layers": layers}})
            h5.create_dataset("w", data=[1.0, 2.0])
        assert scan(path).exit_code == expected, name

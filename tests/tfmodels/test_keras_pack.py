"""Keras / TensorFlow packing (issue #18): real Keras 3 models, real export, real ONNX Runtime.

Bundles are loaded in a *fresh* process in which TensorFlow and Keras must not be imported;
predictions there match the Keras model within 1e-5.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tf_zoo import KINDS, KerasZoo

from packserve.bundle import read_manifest

FRESH = r"""
import json, sys
import numpy as np
import packserve
out = {}
for path, inputs in json.loads(sys.stdin.read()).items():
    m = packserve.load(path)
    x = {k: np.asarray(v, dtype=np.float32) for k, v in inputs.items()} if isinstance(inputs, dict) \
        else np.asarray(inputs, dtype=np.float32)
    p = m.predict(x)
    out[path] = {"probabilities": None if p.probabilities is None else p.probabilities.tolist(),
                 "values": None if p.values is None else np.asarray(p.values).tolist()}
heavy = [n for n in ("tensorflow", "keras", "tf2onnx", "h5py") if n in sys.modules]
print(json.dumps({"out": out, "heavy": heavy}))
"""


def _as_json(sample: object) -> object:
    if isinstance(sample, dict):
        return {k: np.asarray(v).tolist() for k, v in sample.items()}
    return np.asarray(sample).tolist()


def _expected(kind: str, native: np.ndarray) -> tuple[str, np.ndarray]:
    if kind == "regressor":
        return "values", native.reshape(-1)
    if native.shape[1] == 1:  # sigmoid: [1 - p, p]
        return "probabilities", np.concatenate([1 - native, native], axis=1)
    return "probabilities", native


def test_packed_from_object_and_file_match_keras_in_a_fresh_process(keras_zoo: KerasZoo) -> None:
    payload = {str(keras_zoo.bundle(k, s)): _as_json(keras_zoo.cases[k].sample)
               for k in KINDS for s in ("obj", "file")}
    proc = subprocess.run([sys.executable, "-c", FRESH], input=json.dumps(payload),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []  # served without TensorFlow/Keras
    for kind in KINDS:
        field, want = _expected(kind, keras_zoo.cases[kind].native)
        for source in ("obj", "file"):
            got = np.asarray(result["out"][str(keras_zoo.bundle(kind, source))][field])
            assert got.shape == want.shape, (kind, source)
            assert np.max(np.abs(got - want)) <= 1e-5, (kind, source)


def test_manifests_record_task_signature_exporter_and_parity(keras_zoo: KerasZoo) -> None:
    expect = {"binary": ("binary", "table"), "multiclass": ("multiclass", "table"),
              "regressor": ("regression", "table"), "conv": ("multiclass", "tensor"),
              "two_input": ("binary", "tensor")}
    for kind, (task, signature) in expect.items():
        for source in ("obj", "file"):
            m = read_manifest(keras_zoo.bundle(kind, source))
            assert (m.task, m.signature) == (task, signature), (kind, source)
            assert m.framework == "keras" and m.format == "onnx"
            assert m.parity.passed and m.parity.rows > 0
            assert m.converters["keras"] == "3.15.1" and "tf2onnx" in m.converters
            assert "model.export(format='onnx'" in m.export["exporter"]
            assert m.opsets[""] == 17
    two = read_manifest(keras_zoo.bundle("two_input", "obj"))
    assert [(i.name, i.shape) for i in two.inputs] == [("num", [None, 5]), ("image", [None, 8, 8, 1])]
    for source in ("obj", "file"):  # Keras's generated input names are served as "input"
        conv = read_manifest(keras_zoo.bundle("conv", source))
        assert [(i.name, i.shape) for i in conv.inputs] == [("input", [None, 8, 8, 1])]


def test_regression_needs_a_task_when_nothing_says_it(tmp_path: Path) -> None:
    import keras

    from packserve.errors import ConfigError
    from packserve.pack import pack

    m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])  # not compiled, linear
    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    with pytest.raises(ConfigError, match="task='binary' | 'multiclass' | 'regression'"):
        pack(m, tmp_path / "b", sample=x)
    res = pack(m, tmp_path / "b", sample=x, task="regression")
    assert res.manifest.task == "regression" and res.parity.passed


ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.fixture(scope="module")
def lambda_files(keras_zoo: KerasZoo, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A .keras and an .h5 whose Lambda writes MARKER when it runs (built in this process,
    whose TensorFlow the session fixture imported: a TF import costs ~20 s here)."""
    import keras

    d = tmp_path_factory.mktemp("lambda")
    touch = eval(  # a lambda whose bytecode Keras marshals into the file; it names no globals
        f"lambda x: (__import__('pathlib').Path({str(d / 'MARKER')!r}).write_text('ran'), x)[1]")
    m = keras.Sequential([keras.Input((3,)), keras.layers.Lambda(touch), keras.layers.Dense(1)])
    m.save(d / "l.keras")
    m.save(d / "l.h5")
    (d / "MARKER").unlink(missing_ok=True)  # building traced the Lambda once
    return d / "l.keras", d / "l.h5"


def test_an_unsafe_load_of_the_lambda_file_does_run_its_code(lambda_files: tuple[Path, Path]) -> None:
    """The control for the test below: the marker proves code ran, so its absence can fail."""
    import keras

    marker = lambda_files[0].parent / "MARKER"
    keras.saving.load_model(lambda_files[0], safe_mode=False)
    assert marker.exists()
    marker.unlink()


@pytest.mark.parametrize("which", [0, 1], ids=[".keras", ".h5"])
def test_lambda_files_are_flagged_and_refused_and_run_no_code(
    lambda_files: tuple[Path, Path], tmp_path: Path, which: int
) -> None:
    path = lambda_files[which]
    marker = path.parent / "MARKER"
    scan = subprocess.run([sys.executable, "-m", "packserve", "scan", str(path)],
                          capture_output=True, text=True, env=ENV, timeout=120)
    assert scan.returncode == 1 and "Lambda" in scan.stdout + scan.stderr
    sample = tmp_path / "x.npy"
    np.save(sample, np.ones((4, 3), dtype=np.float32))
    packed = subprocess.run([sys.executable, "-m", "packserve", "pack", str(path),
                             str(tmp_path / "out"), "--sample", str(sample)],
                            capture_output=True, text=True, env=ENV, timeout=120)
    assert packed.returncode == 1, packed.stdout + packed.stderr
    assert "refusing to load" in packed.stderr and "Lambda" in packed.stderr
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_cli_packs_a_keras_file_and_inspect_says_why_onnx(keras_zoo: KerasZoo, tmp_path: Path) -> None:
    sample = tmp_path / "x.npy"
    np.save(sample, np.asarray(keras_zoo.cases["binary"].sample))
    out = tmp_path / "b"
    r = subprocess.run([sys.executable, "-m", "packserve", "pack", str(keras_zoo.files["binary"]),
                        str(out), "--sample", str(sample)], capture_output=True, text=True,
                       env=ENV, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "format" in r.stdout and "without TensorFlow" in r.stdout
    r = subprocess.run([sys.executable, "-m", "packserve", "inspect", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "ONNX, not SavedModel/.keras" in r.stdout


def test_saved_model_directory_is_converted_from_its_graph(keras_zoo: KerasZoo, tmp_path: Path) -> None:
    from packserve.pack import pack
    from packserve.pack.files import detect_format, load_model_file

    case = keras_zoo.cases["multiclass"]
    sm = tmp_path / "sm"
    case.model.export(str(sm), format="tf_saved_model", verbose=False)
    assert detect_format(sm) == "tensorflow-savedmodel"
    res = pack(load_model_file(sm), tmp_path / "b", sample=case.sample)
    m = res.manifest
    assert (m.task, m.framework, m.parity.passed) == ("multiclass", "tensorflow", True)
    assert "Softmax" in " ".join(m.notes) and "tf2onnx" in m.export["exporter"]
    import packserve

    got = packserve.load(res.path).predict(np.asarray(case.sample)).probabilities
    assert np.max(np.abs(got - case.native)) <= 1e-5


def test_saved_model_calling_python_is_refused_before_loading(
    keras_zoo: KerasZoo, tmp_path: Path
) -> None:
    import tensorflow as tf

    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
        def __call__(self, x: object) -> object:
            return {"y": tf.py_function(lambda t: t * 2, [x], tf.float32)}

    sm = tmp_path / "pyfunc"
    m = M()
    tf.saved_model.save(m, str(sm), signatures={"serving_default": m.__call__})
    from packserve.errors import UnsafeFileError
    from packserve.pack import pack
    from packserve.pack.files import load_model_file

    with pytest.raises(UnsafeFileError, match="EagerPyFunc"):
        pack(load_model_file(sm), tmp_path / "b", sample=np.ones((2, 3), np.float32))


def test_missing_extra_is_exit_3_naming_it(keras_zoo: KerasZoo, tmp_path: Path) -> None:
    sample = tmp_path / "x.npy"
    np.save(sample, np.ones((2, 5), np.float32))
    code = ("import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
            "from packserve.cli import main\n"
            f"sys.argv = ['packserve', 'pack', {str(keras_zoo.files['binary'])!r}, "
            f"{str(tmp_path / 'o')!r}, '--sample', {str(sample)!r}]\nmain()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 3, r.stderr
    assert "pip install 'packserve[tensorflow]'" in r.stderr

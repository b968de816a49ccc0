"""A Keras image classifier from its ``.keras`` file with ``--preprocess`` (#17): NHWC greyscale,
the whole image path checked against the Keras model itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tf_zoo import KerasZoo
from typer.testing import CliRunner

from packserve.bundle import read_manifest
from packserve.cli import app


def test_keras_file_with_preprocess_and_classes(keras_zoo: KerasZoo, tmp_path: Path) -> None:
    case = keras_zoo.cases["conv"]
    np.save(tmp_path / "s.npy", case.sample)
    spec = {"mode": "L", "resize": [8, 8], "interpolation": "bicubic", "layout": "NHWC",
            "mean": [0.5], "std": [0.25]}
    out = tmp_path / "conv"
    r = CliRunner().invoke(app, ["pack", str(keras_zoo.files["conv"]), str(out), "--sample",
                                 str(tmp_path / "s.npy"), "--preprocess", json.dumps(spec),
                                 "--classes", "x,y,z"])
    assert r.exit_code == 0, r.output
    m = read_manifest(out)
    assert m.preprocess is not None and m.preprocess.layout == "NHWC"
    assert m.outputs.classes == ["x", "y", "z"]
    (entry,) = [c for c in m.parity.checks if c["check"] == "image_path"]
    assert entry["passed"] and "the Keras model" in entry["reference"], entry
    assert entry["max_abs_diff"] <= entry["tolerance"]

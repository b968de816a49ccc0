"""``packserve pack --preprocess --classes`` and ``packserve inspect`` for image models (#17)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pictures import CLASSES, PREPROCESS
from typer.testing import CliRunner

from packserve.bundle import read_manifest
from packserve.cli import app
from packserve.pack.images import CHECK

runner = CliRunner()


@pytest.fixture
def onnx_files(image_bundle: Path, tmp_path: Path) -> dict[str, Path]:
    name = read_manifest(image_bundle).inputs[0].name
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "s.npz", **{name: rng.standard_normal((2, 3, 32, 32)).astype(np.float32)})
    (tmp_path / "pre.json").write_text(json.dumps(PREPROCESS))
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return {"model": image_bundle / "model.onnx", "sample": tmp_path / "s.npz",
            "pre": tmp_path / "pre.json", "classes": tmp_path / "classes.txt"}


def _pack(f: dict[str, Path], out: Path, *extra: str):  # noqa: ANN202
    args = ["pack", str(f["model"]), str(out), "--sample", str(f["sample"]), "--task",
            "multiclass", "--output", "logits", *extra]
    return runner.invoke(app, args)


def test_pack_an_onnx_image_model_then_inspect(onnx_files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "cnn"
    r = _pack(onnx_files, out, "--preprocess", str(onnx_files["pre"]),
              "--classes", str(onnx_files["classes"]))
    assert r.exit_code == 0, r.output
    m = read_manifest(out)
    assert m.preprocess is not None and m.preprocess.crop == (32, 32)
    assert m.outputs.classes == CLASSES and m.outputs.postprocess == "softmax"
    (entry,) = [c for c in m.parity.checks if c["check"] == CHECK]
    assert entry["passed"]
    shown = runner.invoke(app, ["inspect", str(out)])
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    assert "resize shorter side to 36 (bilinear) -> center crop 32x32 -> /255" in text
    assert "image parity PASSED 10 generated images" in text
    assert "4 classes: cat, dog, eel, fox" in text


def test_inline_json_and_a_comma_list(onnx_files: dict[str, Path], tmp_path: Path) -> None:
    r = _pack(onnx_files, tmp_path / "b", "--preprocess", json.dumps(PREPROCESS),
              "--classes", "a, b,c,d")
    assert r.exit_code == 0, r.output
    assert read_manifest(tmp_path / "b").outputs.classes == ["a", "b", "c", "d"]


def test_an_image_model_needs_no_sample(onnx_files: dict[str, Path], tmp_path: Path) -> None:
    """Without --sample the generated images, preprocessed, are the sample; other models
    still need one (exit 2)."""
    base = ["pack", str(onnx_files["model"]), "--task", "multiclass", "--output", "logits"]
    r = runner.invoke(app, [*base[:2], str(tmp_path / "a"), *base[2:], "--preprocess",
                            str(onnx_files["pre"])])
    assert r.exit_code == 0, r.output
    m = read_manifest(tmp_path / "a")
    assert m.parity.rows == 10 and m.parity.passed and m.inputs[0].sample_shape == [10, 3, 32, 32]
    r = runner.invoke(app, [*base[:2], str(tmp_path / "b"), *base[2:]])
    assert r.exit_code == 2 and "--sample is required" in r.output


@pytest.mark.parametrize(("spec", "code", "message"), [
    ('{"resize": 30, "crop": [30, 30]}', 4, "makes instances [3, 30, 30]"),
    ('{"resize": 30}', 4, "give crop=[h, w] or an exact resize"),
    ('{"resize": 36, "crop": [32, 32], "colour": "RGB"}', 4, "colour"),
    ("{bad", 2, "invalid JSON"),
    ("missing.json", 2, "neither a JSON object nor a file"),
    ("[1, 2]", 2, "neither a JSON object nor a file"),
])
def test_bad_specs_exit_with_a_message(
    onnx_files: dict[str, Path], tmp_path: Path, spec: str, code: int, message: str
) -> None:
    r = _pack(onnx_files, tmp_path / "x", "--preprocess", spec)
    assert r.exit_code == code, r.output
    assert message in " ".join(r.output.split())
    assert "Traceback" not in r.output and not (tmp_path / "x").exists()

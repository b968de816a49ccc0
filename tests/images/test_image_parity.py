"""Pack-time parity of the whole image path (#17): the server's decode + preprocessing +
artifact against an independent Pillow + NumPy reference feeding the eager model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pictures import CLASSES, PREPROCESS

import packserve.runtime.images as runtime_images
from packserve.bundle import ImagePreprocess, read_manifest
from packserve.errors import ParityError
from packserve.pack import pack
from packserve.pack.images import CHECK, probe_images, reference_input

SPECS = [
    PREPROCESS,
    {"mode": "L", "resize": [20, 30], "interpolation": "bicubic", "layout": "NHWC",
     "mean": [0.5], "std": [0.25]},
    {"resize": 12, "crop": [16, 18], "interpolation": "lanczos", "scale": False},  # padded crop
    {"resize": 9, "crop": [9, 9], "interpolation": "nearest", "antialias": False,
     "dtype": "uint8", "scale": False},
    {"resize": [7, 11], "interpolation": "box", "dtype": "float16"},
]


@pytest.mark.parametrize("fields", SPECS)
def test_runtime_preprocessing_equals_the_reference(fields: dict[str, Any]) -> None:
    """Both readings of the spec, on every probe image (modes, sizes, EXIF)."""
    spec = ImagePreprocess.model_validate({**fields, "input": "x"})
    tol = {"float32": 1e-5, "float16": 2e-3, "uint8": 0}[spec.dtype]
    cases = probe_images()
    assert len(cases) >= 10 and len({len(b) for _, b in cases}) == len(cases)
    for what, blob in cases:
        got = runtime_images.preprocess(runtime_images.decode(blob, spec), spec)
        want = reference_input(blob, spec)
        assert got.shape == want.shape == tuple(spec.instance_shape()), what
        assert got.dtype == want.dtype, what
        assert float(np.abs(got.astype(np.float64) - want).max()) <= tol, what


def test_the_pack_records_the_image_path_check(image_bundle: Path) -> None:
    m = read_manifest(image_bundle)
    (entry,) = [c for c in m.parity.checks if c["check"] == CHECK]
    assert entry["passed"] and m.parity.passed
    assert entry["images"] == len(entry["cases"]) >= 10
    assert any("RGBA" in c for c in entry["cases"]) and any(" P " in c for c in entry["cases"])
    assert "eager torch model" in entry["reference"]
    assert entry["top1_agreement"] == 1.0
    assert 0 <= entry["max_abs_diff"] <= entry["tolerance"] == m.parity.tolerance


@pytest.fixture
def nearest_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """A runtime bug: the server resizes with nearest whatever the spec says."""
    real = runtime_images._resample
    monkeypatch.setattr(runtime_images, "_resample", lambda name: real("nearest"))


def test_a_runtime_that_drifts_from_the_spec_fails_the_pack(
    tiny_cnn: Any, cnn_sample: Any, tmp_path: Path, nearest_server: None
) -> None:
    kw: dict[str, Any] = {"sample": cnn_sample, "task": "multiclass", "classes": CLASSES,
                          "output": "logits", "preprocess": PREPROCESS}
    with pytest.raises(ParityError, match=r"image path parity failed.*photo 500x375 RGB JPEG"):
        pack(tiny_cnn, tmp_path / "cnn", **kw)
    assert not (tmp_path / "cnn").exists()
    res = pack(tiny_cnn, tmp_path / "cnn", allow_parity_failure=True, **kw)
    (entry,) = [c for c in res.manifest.parity.checks if c["check"] == CHECK]
    assert not entry["passed"] and entry["failed_cases"] and not res.manifest.parity.passed
    assert any("image path parity failed" in n for n in read_manifest(res.path).notes)


def test_an_onnx_file_is_checked_against_itself_in_onnx_runtime(
    image_bundle: Path, tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "s.npz", **{read_manifest(image_bundle).inputs[0].name:
                                    rng.standard_normal((2, 3, 32, 32)).astype(np.float32)})
    res = pack(image_bundle / "model.onnx", tmp_path / "onnx", sample=tmp_path / "s.npz",
               task="multiclass", output="logits", classes=CLASSES, preprocess=PREPROCESS)
    (entry,) = [c for c in res.manifest.parity.checks if c["check"] == CHECK]
    assert entry["passed"] and "ONNX file in ONNX Runtime" in entry["reference"]


def test_probe_images_beyond_the_spec_limits_are_not_sent(
    tiny_cnn: Any, cnn_sample: Any, tmp_path: Path
) -> None:
    res = pack(tiny_cnn, tmp_path / "small", sample=cnn_sample, task="multiclass",
               classes=CLASSES, output="logits", preprocess={**PREPROCESS, "max_pixels": 20_000})
    (entry,) = [c for c in res.manifest.parity.checks if c["check"] == CHECK]
    assert entry["passed"] and entry["beyond_limits"] == ["photo 500x375 RGB JPEG"]
    assert entry["images"] == len(entry["cases"]) == len(probe_images()) - 1


def test_exported_programs_and_training_mode_modules(
    tiny_cnn: Any, cnn_sample: Any, tmp_path: Path
) -> None:
    """The eager reference runs an ExportedProgram's module, checks a TorchScript artifact
    too, and runs a module left in training
    mode (dropout) in eval mode, as it was exported -- then gives the caller its mode back."""
    import torch

    kw: dict[str, Any] = {"sample": cnn_sample, "task": "multiclass", "classes": CLASSES,
                          "output": "logits", "preprocess": PREPROCESS}
    ep = torch.export.export(tiny_cnn, (cnn_sample,),
                             dynamic_shapes=({0: torch.export.Dim("batch")},))
    res = pack(ep, tmp_path / "ep", **kw)
    assert [c["passed"] for c in res.manifest.parity.checks if c["check"] == CHECK] == [True]
    res = pack(tiny_cnn, tmp_path / "ts", format="torchscript", **kw)
    assert res.manifest.format == "torchscript"
    assert [c["passed"] for c in res.manifest.parity.checks if c["check"] == CHECK] == [True]
    dropout = torch.nn.Sequential(tiny_cnn, torch.nn.Dropout(0.5)).train()
    res = pack(dropout, tmp_path / "dropout", **kw)
    (entry,) = [c for c in res.manifest.parity.checks if c["check"] == CHECK]
    assert entry["passed"] and entry["max_abs_diff"] <= entry["tolerance"]
    assert dropout.training and tiny_cnn.training
    tiny_cnn.eval()

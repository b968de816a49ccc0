"""torchvision ``Compose`` -> the bundle's preprocessing spec (#17).

torchvision cannot be installed beside torch 2.13 here, so most tests use ``tv_mirror``:
classes named like torchvision's that carry the same public attributes (what packserve reads;
it never imports torchvision). ``test_real_torchvision_*`` compare pixels with the real
torchvision and run only where it imports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pictures import CLASSES, PREPROCESS
from tv_mirror import (
    CenterCrop,
    Compose,
    ConvertImageDtype,
    Grayscale,
    InterpolationMode,
    Lambda,
    Normalize,
    PILToTensor,
    RandomHorizontalFlip,
    Resize,
    ToTensor,
    v2,
)

from packserve.bundle import ImagePreprocess
from packserve.errors import PackError
from packserve.pack import pack
from packserve.pack.images import probe_images, translate
from packserve.runtime.images import decode, preprocess

MEAN, STD = PREPROCESS["mean"], PREPROCESS["std"]


def _spec(pipeline: Any) -> ImagePreprocess:
    return ImagePreprocess.model_validate({**translate(pipeline).spec, "input": "x"})


def test_v1_imagenet_pipeline_is_the_hand_written_spec() -> None:
    got = _spec(Compose([Resize(36), CenterCrop(32), ToTensor(), Normalize(MEAN, STD)]))
    want = ImagePreprocess.model_validate({**PREPROCESS, "input": "x"})
    assert got.model_dump(exclude={"max_bytes", "max_pixels"}) == \
        want.model_dump(exclude={"max_bytes", "max_pixels"})
    assert translate(Compose([Resize(36), CenterCrop(32), ToTensor()])).notes == []


def test_v2_pipeline_with_a_tensor_stage_resize_is_noted() -> None:
    t = translate(v2.Compose([
        v2.ToImage(), v2.Resize(36, interpolation=InterpolationMode.BICUBIC, antialias=True),
        v2.CenterCrop(32), v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD),
        v2.ToPureTensor()]))
    assert t.spec["resize"] == 36 and t.spec["interpolation"] == "bicubic"
    assert t.spec["crop"] == (32, 32) and t.spec["scale"] and t.spec["dtype"] == "float32"
    assert t.spec["mean"] == MEAN and t.spec["std"] == STD
    assert len(t.notes) == 1 and "tensor" in t.notes[0] and "Pillow" in t.notes[0]


@pytest.mark.parametrize(("pipeline", "expected"), [
    (Compose([Resize((40, 24), interpolation=InterpolationMode.NEAREST_EXACT), PILToTensor()]),
     {"resize": (40, 24), "interpolation": "nearest", "dtype": "uint8", "scale": False}),
    (Compose([Resize([30]), CenterCrop([28, 20]), PILToTensor(),
              ConvertImageDtype(torch.float16)]),
     {"resize": 30, "crop": (28, 20), "dtype": "float16", "scale": True}),
    (v2.Compose([v2.ToImage(), v2.CenterCrop(32), v2.ToDtype(torch.float32)]),
     {"crop": (32, 32), "dtype": "float32", "scale": False}),
    (Compose([Grayscale(), Resize(3, interpolation=2), CenterCrop(3), ToTensor()]),  # PIL int
     {"mode": "L", "interpolation": "bilinear", "crop": (3, 3)}),
    (Compose([Compose([Resize(8)]), Compose([CenterCrop(8), ToTensor()])]),  # nested
     {"resize": 8, "crop": (8, 8)}),
])
def test_other_usual_forms(pipeline: Any, expected: dict[str, Any]) -> None:
    spec = translate(pipeline).spec
    for k, v in expected.items():
        assert spec[k] == v, k
    _spec(pipeline)  # and the result is a valid spec


@pytest.mark.parametrize(("pipeline", "message"), [
    (Compose([RandomHorizontalFlip(), ToTensor()]), "RandomHorizontalFlip is a training-time"),
    (Compose([ToTensor(), Lambda(lambda x: x)]), "Lambda is arbitrary code"),
    (Compose([type("SquarePad", (), {})(), ToTensor()]), "transform SquarePad is not supported"),
    (Compose([Resize(36, max_size=40), ToTensor()]), "max_size"),
    (v2.Compose([v2.ToImage(), v2.Resize(36, antialias=False), v2.ToDtype(torch.float32)]),
     "antialias=False"),
    (v2.Compose([v2.ToImage(), v2.Resize(36, interpolation=InterpolationMode.NEAREST)]),
     "Resize\\(nearest\\) on a tensor"),
    (Compose([CenterCrop(32), Resize(36), ToTensor()]), "Resize after"),
    (Compose([Normalize(MEAN, STD), ToTensor()]), "Normalize needs a float tensor"),
    (Compose([ToTensor(), Normalize(MEAN, STD), CenterCrop(8)]), "CenterCrop after Normalize"),
    (Compose([Resize(36), CenterCrop(32)]), "end with a PIL image"),
    (Compose([ToTensor(), ConvertImageDtype(torch.float64)]), "float64"),
])
def test_refused_with_the_reason(pipeline: Any, message: str) -> None:
    with pytest.raises(PackError, match=message):
        translate(pipeline)


def test_pack_takes_a_compose_and_refuses_an_unknown_transform(
    tiny_cnn: Any, cnn_sample: Any, tmp_path: Path
) -> None:
    compose = v2.Compose([v2.ToImage(), v2.Resize(36), v2.CenterCrop(32),
                          v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])
    res = pack(tiny_cnn, tmp_path / "tv", sample=cnn_sample, task="multiclass", classes=CLASSES,
               output="logits", preprocess=compose)
    pre = res.manifest.preprocess
    assert pre is not None and pre.resize == 36 and pre.crop == (32, 32) and pre.input
    assert any("Resize runs on a tensor" in n for n in res.manifest.notes)
    bad = Compose([Resize(36), CenterCrop(32), RandomHorizontalFlip(), ToTensor()])
    with pytest.raises(PackError, match="RandomHorizontalFlip"):
        pack(tiny_cnn, tmp_path / "bad", sample=cnn_sample, task="multiclass", classes=CLASSES,
             output="logits", preprocess=bad)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(PackError, match="mapping of spec fields or a torchvision Compose"):
        pack(tiny_cnn, tmp_path / "bad", sample=cnn_sample, preprocess=42)


def _torchvision_cases() -> list[tuple[str, str]]:
    return [("v1", "pil"), ("v2", "pil"), ("v2", "tensor")]


@pytest.mark.parametrize(("api", "where"), _torchvision_cases())
def test_real_torchvision_pixels_equal_the_runtime(api: str, where: str) -> None:
    """Where torchvision imports: its output tensor vs the runtime on the translated spec."""
    tv = pytest.importorskip("torchvision", reason="torchvision does not import beside torch "
                             "2.13 here; this runs where it does")
    if api == "v1":
        T = tv.transforms
        compose = T.Compose([T.Resize(36), T.CenterCrop(32), T.ToTensor(), T.Normalize(MEAN, STD)])
    else:
        T = tv.transforms.v2
        steps = [T.Resize(36, antialias=True), T.CenterCrop(32)]
        head = [T.ToImage(), *steps] if where == "tensor" else [*steps, T.ToImage()]
        compose = T.Compose([*head, T.ToDtype(torch.float32, scale=True), T.Normalize(MEAN, STD)])
    spec = _spec(compose)
    # PIL-stage resizing is Pillow on both sides: equal up to float rounding. Tensor-stage:
    # torch's antialiased uint8 kernel vs Pillow's, at most ~1 grey level apart.
    tol = 1e-5 if where == "pil" else 1.5 / 255 / min(STD)
    for what, blob in probe_images():
        img = decode(blob, spec)
        want = compose(img).numpy()
        got = preprocess(img, spec)
        assert got.shape == want.shape, what
        assert float(np.abs(got - want).max()) <= tol, what

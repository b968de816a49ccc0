"""The demo's image step (issue #17): a colour classifier whose preprocessing is in its bundle.

A CNN of 3 conv layers and 10 classes whose weights are set in code, no training: the
convolutions average neighbouring pixels (3x3, stride 2), the pooling gives the picture's mean
colour and the linear layer scores how close it is to each class colour, so an orange picture
must come back "orange". That checks the whole served path by eye: a wrong channel order or
normalisation would turn orange into blue. Building it costs microseconds, which keeps the
demo fast; ``examples/image_classifier.py`` trains a similar CNN instead, written out for
readers.
"""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 50, 220),
           "yellow": (240, 220, 30), "cyan": (40, 210, 220), "magenta": (210, 40, 200),
           "white": (245, 245, 245), "black": (15, 15, 15), "orange": (250, 140, 20),
           "purple": (110, 40, 160)}
CLASSES = list(COLOURS)
PREPROCESS: dict[str, Any] = {"resize": 36, "crop": [32, 32], "interpolation": "bilinear",
                              "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def picture(colour: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """An ``h x w`` picture of ``colour``, shaded, with noise."""
    img = np.asarray(COLOURS[colour], np.float32) * np.ones((h, w, 1), np.float32)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img *= (1.0 + 0.1 * np.sin(x / w * rng.uniform(1, 6) + y / h * rng.uniform(1, 6)))[..., None]
    img += rng.normal(0, 12, img.shape)
    return img.clip(0, 255).astype(np.uint8)


def jpeg(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def build() -> tuple[Any, float]:
    """(the CNN in eval mode, seconds to build it): weights set as the module doc says."""
    import torch
    from torch import nn

    t = time.perf_counter()
    convs = [nn.Conv2d(3, 8, 3, stride=2), nn.Conv2d(8, 16, 3, stride=2),
             nn.Conv2d(16, 32, 3, stride=2)]
    head = nn.Linear(32, len(CLASSES))
    mean, std = np.asarray(PREPROCESS["mean"]), np.asarray(PREPROCESS["std"])
    # class colours as the model sees them: normalised, +3 (conv 1's bias keeps them > 0)
    targets = (np.asarray(list(COLOURS.values())) / 255.0 - mean) / std + 3.0
    with torch.no_grad():
        for i, conv in enumerate(convs):
            weight, bias = conv.weight, conv.bias
            assert bias is not None
            weight.zero_()
            bias.zero_()
            for c in range(3):  # channel c -> channel c, 3x3 mean
                weight[c, c] = 1.0 / 9.0
                if i == 0:
                    bias[c] = 3.0
        head.weight.zero_()  # -|m - t_k|^2 up to a constant: 2 m.t_k - |t_k|^2
        head.weight[:, :3] = torch.from_numpy(2.0 * targets).float()
        head.bias.copy_(torch.from_numpy(-(targets ** 2).sum(axis=1)).float())
    model = nn.Sequential(convs[0], nn.ReLU(), convs[1], nn.ReLU(), convs[2], nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), head).eval()
    return model, time.perf_counter() - t


def pack(model: Any, out: Any) -> Any:
    """The packed bundle (PackResult): preprocessing and class names in its manifest."""
    import torch

    from packserve.pack import pack as pack_model

    return pack_model(model, out, sample=torch.randn(4, 3, 32, 32), name="colours",
                      task="multiclass", classes=CLASSES, output="logits",
                      preprocess=PREPROCESS, force=True)


def questions(seed: int = 42) -> dict[str, bytes]:
    """JPEGs the model has not seen, of other sizes and aspect ratios than 32x32."""
    rng = np.random.default_rng(seed)
    return {"orange": jpeg(picture("orange", 300, 200, rng)),
            "blue": jpeg(picture("blue", 180, 320, rng)),
            "green": jpeg(picture("green", 240, 240, rng))}


def main(argv: list[str]) -> int:
    """``python -m packserve.demo.images OUT``: build, pack to ``OUT/colours`` and write
    ``OUT/colours.json`` (bundle path, build and pack seconds): the demo runs this in the
    background while its tabular steps run."""
    out = Path(argv[0])
    model, build_s = build()
    t = time.perf_counter()
    res = pack(model, out / "colours")
    (out / "colours.json").write_text(json.dumps(
        {"path": str(res.path), "build_s": build_s, "pack_s": time.perf_counter() - t}))
    return 0


__all__ = ["CLASSES", "PREPROCESS", "build", "jpeg", "main", "pack", "picture", "questions"]


if __name__ == "__main__":  # pragma: no cover - the demo's background process
    raise SystemExit(main(sys.argv[1:]))

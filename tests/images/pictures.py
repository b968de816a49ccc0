"""Images built in code for the image-bundle tests (#17): no downloads, no fixture files."""

from __future__ import annotations

import io

import numpy as np

CLASSES = ["cat", "dog", "eel", "fox"]
PREPROCESS = {"resize": 36, "crop": [32, 32], "interpolation": "bilinear",
              "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
              "max_pixels": 4_000_000, "max_bytes": 2_000_000}


def encode(arr: np.ndarray, fmt: str, **kw: object) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **kw)
    return buf.getvalue()


def picture(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth picture with structure (gradients + a blob), so classes differ per image."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x / w * 255, y / h * 255, ((x + y) % 64) * 4], axis=-1)
    cy, cx = rng.integers(0, h), rng.integers(0, w)
    blob = ((y - cy) ** 2 + (x - cx) ** 2) < (min(h, w) // 3) ** 2
    base[blob] = rng.integers(0, 255, 3)
    return base.clip(0, 255).astype(np.uint8)


__all__ = ["CLASSES", "PREPROCESS", "encode", "picture"]

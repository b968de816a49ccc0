"""An independent Pillow + NumPy reading of an image spec, and the images to check it on (#17).

The pack-time check of the whole image path compares the server's code
(:mod:`packserve.runtime.images`) with this module, which is written straight from the spec's
definition (torchvision's semantics) and shares no code with the runtime: straightforward
float64 arithmetic, no folded multiply-add, crop-then-pad computed the long way. If either is
wrong, they disagree and the pack fails. torchvision itself, where installed, is compared with
the runtime in the tests.

The probe images cover what a server meets: several sizes and aspect ratios (wide, tall, tiny,
1x1), modes (RGB, L, RGBA, palette), JPEG and PNG, and an EXIF-rotated JPEG.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from packserve.bundle import ImagePreprocess


def _pil() -> Any:
    from PIL import Image

    return Image


def _scene(h: int, w: int, seed: int) -> np.ndarray:
    """Gradients, stripes and a disc of a random colour: structure a model reacts to."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    fy, fx = rng.uniform(1, 6, 2)
    rgb = np.stack([255 * x / max(w - 1, 1), 255 * y / max(h - 1, 1),
                    127.5 + 127.5 * np.sin(fx * x / max(w, 1) * 6.3 + fy * y / max(h, 1) * 6.3)],
                   axis=-1)
    cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), max(min(h, w) / 3, 1.0)
    rgb[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
    return rgb.clip(0, 255).astype(np.uint8)


def _encode(img: Any, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def probe_images() -> list[tuple[str, bytes]]:
    """(description, encoded bytes) for every case the whole-path check runs."""
    Image = _pil()
    out: list[tuple[str, bytes]] = []

    def add(what: str, arr: np.ndarray, mode: str, fmt: str, **kw: Any) -> None:
        img = Image.fromarray(arr)
        if mode == "L":
            img = img.convert("L")
        elif mode == "RGBA":
            alpha = Image.fromarray(arr[:, :, 0][::-1].copy())
            img.putalpha(alpha)
        elif mode == "P":
            img = img.quantize(colors=32)
        h, w = arr.shape[:2]
        out.append((f"{what} {w}x{h} {mode} {fmt}", _encode(img, fmt, **kw)))

    add("photo", _scene(375, 500, 1), "RGB", "JPEG", quality=90)
    add("square", _scene(64, 64, 2), "RGB", "PNG")
    add("grey", _scene(90, 40, 3), "L", "PNG")
    add("alpha", _scene(50, 70, 4), "RGBA", "PNG")
    add("palette", _scene(30, 80, 5), "P", "PNG")
    add("wide", _scene(40, 320, 6), "RGB", "PNG")
    add("tall", _scene(200, 24, 7), "RGB", "PNG")
    add("small", _scene(7, 5, 8), "RGB", "PNG")
    add("dot", _scene(1, 1, 9), "RGB", "PNG")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to view
    add("rotated", _scene(48, 96, 10), "RGB", "JPEG", quality=95, exif=exif.tobytes())
    return out


def within_limits(data: bytes, spec: ImagePreprocess) -> bool:
    """Whether the spec's ``max_bytes`` / ``max_pixels`` let this image through at all."""
    with _pil().open(io.BytesIO(data)) as img:
        w, h = img.size
    return len(data) <= spec.max_bytes and w * h <= spec.max_pixels


def _shorter_side(w: int, h: int, size: int) -> tuple[int, int]:
    """torchvision's Resize(int): the shorter side becomes ``size``, the longer is truncated."""
    if w <= h:
        return size, int(size * h / w)
    return int(size * w / h), size


def reference_input(data: bytes, spec: ImagePreprocess) -> np.ndarray:
    """Encoded bytes -> one model input instance, computed from the spec's definition."""
    from PIL import ImageOps

    Image = _pil()
    img = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    img = img.convert(spec.mode)
    filters = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
               "lanczos": Image.LANCZOS, "box": Image.BOX, "hamming": Image.HAMMING}
    if isinstance(spec.resize, int):
        img = img.resize(_shorter_side(*img.size, spec.resize), filters[spec.interpolation])
    elif spec.resize is not None:
        img = img.resize((spec.resize[1], spec.resize[0]), filters[spec.interpolation])
    px = np.array(img, dtype=np.float64).reshape(img.size[1], img.size[0], -1)
    if spec.crop is not None:
        px = _crop(px, spec.crop)
    if spec.scale:
        px = px / 255.0
    if spec.mean is not None:
        px = px - np.array(spec.mean, dtype=np.float64)
    if spec.std is not None:
        px = px / np.array(spec.std, dtype=np.float64)
    if spec.layout == "NCHW":
        px = np.moveaxis(px, -1, 0)
    return px.astype(spec.dtype)


def _crop(px: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    """Center crop as torchvision: pad with zeros (split as (d // 2, d - d // 2)) if needed,
    then take the window starting at round((size - crop) / 2)."""
    ch, cw = crop
    h, w = px.shape[:2]
    canvas = np.zeros((max(h, ch), max(w, cw), px.shape[2]), dtype=px.dtype)
    oy, ox = max(ch - h, 0) // 2, max(cw - w, 0) // 2
    canvas[oy:oy + h, ox:ox + w] = px
    top = round((canvas.shape[0] - ch) / 2.0)
    left = round((canvas.shape[1] - cw) / 2.0)
    return canvas[top:top + ch, left:left + cw]


__all__ = ["probe_images", "reference_input", "within_limits"]

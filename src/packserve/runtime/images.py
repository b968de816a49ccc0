"""Encoded images -> the model's input tensor, as the manifest's ``preprocess`` declares (#17).

Pillow decodes, NumPy does the arithmetic. Every way an image can be wrong has one outcome:

* empty, or over ``max_bytes``: 422 / 413 before Pillow sees a byte;
* not a JPEG, PNG, WebP or GIF (including a non-image named ``.jpg``): 415;
* more than ``max_pixels`` pixels, read from the header (``Image.open`` parses only the
  header): 413 before any pixel is decoded, so a decompression bomb costs nothing;
* truncated or corrupt (bad CRC, broken stream): 422 (truncated images are never padded);
* animated (GIF/WebP/APNG with several frames): 422 -- which frame a person meant is a guess;
* EXIF orientation is applied (what a person sees is what the model sees);
* palette, CMYK, alpha, 16-bit: converted to the declared mode. Alpha is dropped as
  ``Image.convert`` does (as torchvision's ``ImageFolder`` loader does); 16-bit greyscale is
  scaled to 8 bits (>> 8) instead of being clipped.

JPEG ``draft`` (decode at reduced scale) is not used: it changes pixels against the reference.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from packserve.bundle import ImagePreprocess, Manifest
from packserve.errors import (
    ImageError,
    ImageTooLargeError,
    MissingDependencyError,
    UnsupportedMediaTypeError,
)

if TYPE_CHECKING:
    from PIL.Image import Image

FORMATS = ("JPEG", "PNG", "WEBP", "GIF")
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a")
_DIRECT = frozenset({"P", "CMYK", "RGB", "L", "1", "YCbCr"})
_SIXTEEN_BIT = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


def _pil() -> Any:
    try:
        from PIL import Image, ImageOps
    except ImportError as exc:  # pragma: no cover - pillow is a dependency of the extra
        raise MissingDependencyError("pillow", "images") from exc
    return Image, ImageOps


def decode(data: bytes, spec: ImagePreprocess, *, where: str = "image") -> Image:
    """Bytes -> a fully decoded, upright image in ``spec.mode`` (see the module doc)."""
    Image, ImageOps = _pil()
    if not data:
        raise ImageError(f"{where}: empty (no image bytes)", where=where)
    if len(data) > spec.max_bytes:
        raise ImageTooLargeError(
            f"{where}: {len(data)} bytes exceeds the limit of {spec.max_bytes} bytes"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit rules
        try:
            img = Image.open(io.BytesIO(data), formats=FORMATS)
        except Image.DecompressionBombError:
            raise _too_many(where, None, spec) from None
        except Image.UnidentifiedImageError:
            if data.startswith(_SIGNATURES) or data[8:12] == b"WEBP":  # one of ours, broken
                raise ImageError(f"{where}: corrupt image header", where=where) from None
            raise UnsupportedMediaTypeError(
                f"{where}: not a JPEG, PNG, WebP or GIF image"
            ) from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageError(f"{where}: corrupt image header", where=where) from exc
        w, h = img.size
        if w * h > spec.max_pixels:
            raise _too_many(where, (w, h), spec)
        if w < 1 or h < 1:
            raise ImageError(f"{where}: image has no pixels", where=where)
        if getattr(img, "n_frames", 1) > 1:
            raise ImageError(
                f"{where}: animated image ({img.n_frames} frames); send a single frame",
                where=where,
            )
        try:
            img.load()
            img = ImageOps.exif_transpose(img)
        except Image.DecompressionBombError:
            raise _too_many(where, None, spec) from None
        except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
            raise ImageError(
                f"{where}: the image data is truncated or corrupt ({img.format})", where=where
            ) from exc
    return _to_mode(img, spec.mode)


def _too_many(where: str, size: tuple[int, int] | None, spec: ImagePreprocess) -> ImageTooLargeError:
    dims = f" ({size[0]}x{size[1]})" if size else ""
    return ImageTooLargeError(f"{where}: image{dims} exceeds the limit of {spec.max_pixels} pixels")


def _to_mode(img: Image, mode: str) -> Image:
    Image, _ = _pil()
    if img.mode == mode:
        return img
    if img.mode in _SIXTEEN_BIT:  # 16-bit greyscale: keep the top 8 bits, don't clip
        arr = np.asarray(img, dtype=np.int64)
        img = Image.fromarray((np.clip(arr, 0, 65535) >> 8).astype(np.uint8), mode="L")
        return img if mode == "L" else img.convert(mode)
    if img.mode not in _DIRECT or "transparency" in img.info:  # alpha, LA, PA, ...: via RGBA
        img = img.convert("RGBA")
    return img.convert(mode)


def _resample(name: str) -> int:
    Image, _ = _pil()
    return int(getattr(Image.Resampling, name.upper()))


def preprocess(img: Image, spec: ImagePreprocess) -> np.ndarray:
    """A decoded image in ``spec.mode`` -> one instance (no batch axis) in the model's layout."""
    resample = _resample(spec.interpolation)
    if isinstance(spec.resize, int):
        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        new_long = max(1, int(spec.resize * long / short))  # torchvision's rounding
        size = (spec.resize, new_long) if w <= h else (new_long, spec.resize)
        if size != img.size:
            img = img.resize(size, resample)
    elif spec.resize is not None:
        rh, rw = spec.resize
        if (rw, rh) != img.size:
            img = img.resize((rw, rh), resample)
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if spec.crop is not None:
        arr = _center_crop(arr, spec.crop)
    if spec.layout == "NCHW":  # transpose the uint8 pixels: 4x less to move than floats
        arr = arr.transpose(2, 0, 1)
    if spec.dtype == "uint8":
        return np.ascontiguousarray(arr)
    a, b = _affine(spec, arr.shape[0] if spec.layout == "NCHW" else arr.shape[-1])
    shape = (-1, 1, 1) if spec.layout == "NCHW" else (1, 1, -1)
    x = arr.astype(np.float32)  # contiguous copy
    x *= a.reshape(shape)  # scale, mean and std folded into one multiply-add
    x += b.reshape(shape)
    return x if spec.dtype == "float32" else x.astype(spec.dtype)


def _affine(spec: ImagePreprocess, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """``((p / 255) - mean) / std`` as ``p * a + b``, per channel."""
    scale = 1.0 / 255.0 if spec.scale else 1.0
    mean = np.broadcast_to(np.asarray(spec.mean or [0.0], np.float64), (channels,))
    std = np.broadcast_to(np.asarray(spec.std or [1.0], np.float64), (channels,))
    return (scale / std).astype(np.float32), (-mean / std).astype(np.float32)


def _center_crop(arr: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    ch, cw = crop
    h, w = arr.shape[:2]
    if ch > h or cw > w:  # torchvision pads with zeros, then crops
        pt, pl = (ch - h) // 2 if ch > h else 0, (cw - w) // 2 if cw > w else 0
        pb, pr = max(ch - h - pt, 0), max(cw - w - pl, 0)
        arr = np.pad(arr, ((pt, pb), (pl, pr), (0, 0)))
        h, w = arr.shape[:2]
    top = round((h - ch) / 2.0)
    left = round((w - cw) / 2.0)
    return arr[top : top + ch, left : left + cw]


class ImagePipeline:
    """The manifest's preprocessing, compiled once per loaded model: images -> feeds."""

    def __init__(self, manifest: Manifest) -> None:
        if manifest.preprocess is None:
            raise ValueError("this bundle declares no image preprocessing")
        self.spec = manifest.preprocess
        self.input = self.spec.input
        #: one instance's shape and dtype (no batch axis; the spec's size is fixed): a batch
        #: can be allocated up front
        self.instance_shape = tuple(self.spec.instance_shape())
        self.dtype = np.dtype(self.spec.dtype)

    def instance(self, item: bytes | Image, where: str = "image") -> np.ndarray:
        """One encoded image (or decoded Pillow image) -> one instance, no batch axis.

        Thread-safe (no shared state): a server decodes the images of one request in
        parallel with it; Pillow releases the GIL while it decodes and resizes."""
        if isinstance(item, bytes | bytearray):
            img = decode(bytes(item), self.spec, where=where)
        else:
            img = _to_mode(item, self.spec.mode)
        return preprocess(img, self.spec)

    def tensor(self, images: Sequence[bytes | Image]) -> np.ndarray:
        """Encoded images (or decoded Pillow images) -> one batch ``[n, ...]``, in order."""
        if not images:
            raise ImageError("no images given", where="images")
        many = len(images) > 1
        return np.stack([self.instance(item, f"image {i}" if many else "image")
                         for i, item in enumerate(images)])

    def feeds(self, images: Sequence[bytes | Image]) -> dict[str, np.ndarray]:
        return {self.input: self.tensor(images)}


__all__ = ["FORMATS", "ImagePipeline", "decode", "preprocess"]

"""Request bodies for image bundles (issue #17): encoded images, sent as a person sends them.

An image model is measured with what its clients send: encoded files, not preprocessed
tensors (decoding and resizing are most of the server's work). One image per request is a raw
body (``Content-Type: image/jpeg`` ...); ``batch_size`` images are one ``multipart/form-data``
upload with that many files. Images come from a directory (``--images DIR``) or are built in
code with Pillow at the size the model's preprocessing produces: smooth gradients, a blob and
noise, JPEG quality 90, so they compress like photos rather than like flat colour. Everything
is encoded once, before the clock runs.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from packserve.errors import ConfigError, MissingDependencyError

#: suffixes read from ``--images DIR`` and the media type each is sent as
SUFFIXES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
            ".webp": "image/webp"}
MAX_FILES = 256
DEFAULT_SIZE = (224, 224)
BOUNDARY = "packserve-bench-7d1f0c"


@dataclass(frozen=True)
class EncodedImage:
    name: str
    data: bytes
    media_type: str


@dataclass(frozen=True)
class ImageSet:
    """Encoded images to send, and a line saying where they came from."""

    images: tuple[EncodedImage, ...]
    source: str

    @property
    def mean_bytes(self) -> float:
        return sum(len(i.data) for i in self.images) / len(self.images)


def picture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """An ``h x w`` RGB picture with structure (gradients, a blob, mild noise)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, 3)
    base = np.stack([127 + 120 * np.sin(x / w * 3 + phase[0]),
                     127 + 120 * np.cos(y / h * 2 + phase[1]),
                     127 + 120 * np.sin((x + y) / (w + h) * 4 + phase[2])], axis=-1)
    cy, cx, r = rng.integers(0, h), rng.integers(0, w), max(1, min(h, w) // 4)
    base[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
    base += rng.normal(0, 6, base.shape)
    return base.clip(0, 255).astype(np.uint8)


def generated(size: tuple[int, int] = DEFAULT_SIZE, *, count: int = 32, seed: int = 0,
              quality: int = 90) -> ImageSet:
    """``count`` distinct JPEGs of ``size`` = (height, width), built in code (no downloads)."""
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - pillow comes with packserve[images]
        raise MissingDependencyError("pillow", "images") from exc
    h, w = size
    if h < 1 or w < 1:
        raise ConfigError(f"cannot generate {h}x{w} images")
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        buf = io.BytesIO()
        Image.fromarray(picture(h, w, rng)).save(buf, "JPEG", quality=quality)
        out.append(EncodedImage(f"gen{i}.jpg", buf.getvalue(), "image/jpeg"))
    return ImageSet(tuple(out), f"{count} generated {w}x{h} JPEGs (quality {quality})")


def from_dir(path: str | Path) -> ImageSet:
    """Up to :data:`MAX_FILES` ``.jpg/.jpeg/.png/.webp`` files of ``path`` (sorted by name)."""
    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"--images: {str(path)!r} is not a directory")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())
    if not files:
        raise ConfigError(f"--images: no .jpg, .jpeg, .png or .webp files in {str(path)!r}")
    out = []
    for p in files[:MAX_FILES]:
        data = p.read_bytes()
        if data:
            out.append(EncodedImage(p.name, data, SUFFIXES[p.suffix.lower()]))
    if not out:
        raise ConfigError(f"--images: every image file in {str(path)!r} is empty")
    more = f" (the first {MAX_FILES} of {len(files)})" if len(files) > MAX_FILES else ""
    return ImageSet(tuple(out), f"{len(out)} images from {root}{more}")


def multipart(images: list[EncodedImage]) -> bytes:
    """One ``multipart/form-data`` body with one ``file`` part per image, in order."""
    parts = []
    for img in images:
        parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
                     f'filename="{img.name}"\r\nContent-Type: {img.media_type}\r\n\r\n'.encode()
                     + img.data + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


MULTIPART_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def bodies(images: ImageSet, *, batch_size: int = 1, count: int = 256,
           seed: int = 0) -> list[tuple[bytes, str]]:
    """``(body, content type)`` pairs: each image raw (batch 1, every image once and in
    turn), or ``batch_size`` images drawn at random per multipart upload."""
    if batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    pool = list(images.images)
    if batch_size == 1:
        return [(img.data, img.media_type) for img in pool]
    rng = random.Random(seed)
    return [(multipart([rng.choice(pool) for _ in range(batch_size)]), MULTIPART_TYPE)
            for _ in range(max(1, min(count, 4 * len(pool))))]


__all__ = ["DEFAULT_SIZE", "MULTIPART_TYPE", "EncodedImage", "ImageSet", "bodies", "from_dir",
           "generated", "multipart", "picture"]

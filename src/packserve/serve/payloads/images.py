"""Request bodies of image bundles (#17): encoded images in, top-k labels out.

What a person sends: a raw body (``Content-Type: image/jpeg|png|webp|gif``), a
``multipart/form-data`` upload with one or several files (several = a batch), or JSON
``{"image": "<base64>"}`` / ``{"instances": [{"image": ...}, ...]}``. A JSON body without
images (``{"inputs": ...}``) falls through to the tensor decoder: clients that preprocess
themselves send the tensor. Decoding and preprocessing run in a worker thread, never on the
event loop; a batch is decoded image by image there.
"""

from __future__ import annotations

import asyncio
import binascii
from base64 import b64decode
from typing import Any
from urllib.parse import parse_qs

import numpy as np
import orjson

from packserve.bundle import Manifest
from packserve.errors import BadRequestError, ImageError, InputError, UnsupportedMediaTypeError
from packserve.runtime.images import ImagePipeline
from packserve.runtime.inputs import Feeds
from packserve.runtime.prediction import Prediction

IMAGE_MEDIA = frozenset({b"image/jpeg", b"image/png", b"image/webp", b"image/gif"})
DEFAULT_TOP_K = 5
_MEDIA_HINT = (
    "send an image as Content-Type image/jpeg, image/png or image/webp, as multipart/form-data, "
    'or JSON {"image": "<base64>"}'
)


def _media(headers: dict[bytes, bytes]) -> tuple[bytes, bytes]:
    ctype = headers.get(b"content-type", b"")
    media, _, params = ctype.partition(b";")
    return media.strip().lower(), params


def parse_multipart(body: bytes, params: bytes) -> list[bytes]:
    """The file parts of a ``multipart/form-data`` body, in order (other fields ignored)."""
    boundary = None
    for param in params.split(b";"):
        key, _, value = param.strip().partition(b"=")
        if key.strip().lower() == b"boundary":
            boundary = value.strip().strip(b'"')
    if not boundary:
        raise BadRequestError("multipart/form-data without a boundary parameter")
    delim = b"--" + boundary
    chunks = body.split(delim)
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        raise BadRequestError("multipart body is incomplete (no closing boundary)")
    files: list[bytes] = []
    for chunk in chunks[1:-1]:
        head, sep, data = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            raise BadRequestError("multipart part without headers")
        lines = [line.lower() for line in head.split(b"\r\n")]
        is_file = any(b"filename=" in line for line in lines) or any(
            line.startswith(b"content-type:") and b"image/" in line for line in lines
        )
        if is_file:
            files.append(data.removesuffix(b"\r\n"))
    if not files:
        raise BadRequestError("multipart/form-data body holds no file part")
    return files


def _b64(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise ImageError(f"{where}: must be a base64 string", where=where)
    if value.startswith("data:"):  # a data URL: data:image/png;base64,....
        value = value.partition(",")[2]
    try:
        return b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError(f"{where}: not valid base64", where=where) from None


def json_images(obj: Any) -> list[bytes] | None:
    """Images of a JSON body, or None when it carries none (a tensor body)."""
    if isinstance(obj, dict) and "image" in obj:
        return [_b64(obj["image"], "image")]
    if isinstance(obj, dict) and isinstance(obj.get("instances"), list):
        items = obj["instances"]
        if items and all(isinstance(i, dict) and "image" in i for i in items):
            return [_b64(i["image"], f"instances[{n}].image") for n, i in enumerate(items)]
    return None


def top_k_param(query: bytes) -> int:
    values = parse_qs(query.decode("latin-1")).get("top_k")
    if not values:
        return DEFAULT_TOP_K
    try:
        k = int(values[-1])
    except ValueError:
        k = 0
    if k < 1:
        raise InputError("top_k must be a positive integer", where="top_k")
    return k


class ImageRequestDecoder:
    """Compiled once per model version of an image bundle."""

    def __init__(self, manifest: Manifest, version: str, *, max_batch: int) -> None:
        self.pipeline = ImagePipeline(manifest)
        self.max_batch = max_batch
        self.version = version
        self.classes = list(manifest.outputs.classes or [])

    def images(self, headers: dict[bytes, bytes], body: bytes) -> list[bytes] | None:
        """The encoded images of a request; None: a JSON body without images."""
        media, params = _media(headers)
        if media in IMAGE_MEDIA:
            blobs = [body]
        elif media == b"multipart/form-data":
            blobs = parse_multipart(body, params)
        elif media == b"application/json" or media.endswith(b"+json"):
            try:
                obj = orjson.loads(body)
            except orjson.JSONDecodeError:
                raise BadRequestError("the body is not valid JSON") from None
            found = json_images(obj)
            if found is None:
                return None
            blobs = found
        else:
            raise UnsupportedMediaTypeError(_MEDIA_HINT)
        if len(blobs) > self.max_batch:
            raise InputError(
                f"{len(blobs)} images exceed the batch limit of {self.max_batch}", where="images"
            )
        return blobs

    async def feeds(self, blobs: list[bytes]) -> Feeds:
        """Decode + preprocess in a worker thread (Pillow releases the GIL while decoding)."""
        return await asyncio.to_thread(self.pipeline.feeds, blobs)

    def _items(self, pred: Prediction, k: int) -> list[dict[str, Any]]:
        assert pred.probabilities is not None
        probs = pred.probabilities
        k = min(k, probs.shape[1])
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        classes = self.classes or list(range(probs.shape[1]))
        items = []
        for row, idx in zip(probs.tolist(), order.tolist(), strict=True):
            top = [{"label": classes[i], "probability": row[i]} for i in idx]
            items.append({"prediction": top[0]["label"], "probability": top[0]["probability"],
                          "top_k": top})
        return items

    def encode(self, pred: Prediction, *, top_k: int, batch: bool) -> bytes:
        items = self._items(pred, top_k)
        if batch:
            return orjson.dumps(
                {"predictions": items, "batch_size": len(items), "model_version": self.version}
            )
        return orjson.dumps({**items[0], "model_version": self.version})


__all__ = ["DEFAULT_TOP_K", "IMAGE_MEDIA", "ImageRequestDecoder", "json_images", "parse_multipart",
           "top_k_param"]

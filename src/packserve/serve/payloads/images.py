"""Request bodies of image bundles (#17): encoded images in, top-k labels out.

What a person sends: a raw body (``Content-Type: image/jpeg|png|webp|gif``), a
``multipart/form-data`` upload with one or several files (several = a batch), or JSON
``{"image": "<base64>"}`` / ``{"instances": [{"image": ...}, ...]}``. A JSON body without
images (``{"inputs": ...}``) falls through to the tensor decoder: clients that preprocess
themselves send the tensor. Multipart bodies are parsed while they stream in
(:mod:`~packserve.serve.payloads.multipart`). Decoding and preprocessing never run on the event
loop: they run in one bounded pool per process (:func:`decode_pool`), the images of one request
concurrently. ``?top_k=`` picks how many labels come back; ``?raw=true`` adds the model's own
output tensor (e.g. the logits) to each prediction as ``outputs``.
"""

from __future__ import annotations

import asyncio
import binascii
import os
from base64 import b64decode
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs

import numpy as np
import orjson
from starlette.types import Receive

from packserve.bundle import Manifest
from packserve.errors import BadRequestError, ImageError, InputError, UnsupportedMediaTypeError
from packserve.runtime.images import ImagePipeline
from packserve.runtime.inputs import Feeds
from packserve.runtime.prediction import Prediction
from packserve.serve.http import body_chunks, read_body
from packserve.serve.payloads.multipart import FileParts, boundary_of

IMAGE_MEDIA = frozenset({b"image/jpeg", b"image/png", b"image/webp", b"image/gif"})
DEFAULT_TOP_K = 5
MAX_DECODE_THREADS = 8
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_MEDIA_HINT = (
    "send an image as Content-Type image/jpeg, image/png or image/webp, as multipart/form-data, "
    'or JSON {"image": "<base64>"}'
)


def _media(headers: dict[bytes, bytes]) -> bytes:
    ctype = headers.get(b"content-type", b"")
    return ctype.partition(b";")[0].strip().lower()


def b64_image(value: Any, where: str) -> bytes:
    """A base64 string (or a ``data:`` URL) -> the image bytes; 422 if it is neither."""
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
        return [b64_image(obj["image"], "image")]
    if isinstance(obj, dict) and isinstance(obj.get("instances"), list):
        items = obj["instances"]
        if items and all(isinstance(i, dict) and "image" in i for i in items):
            return [b64_image(i["image"], f"instances[{n}].image") for n, i in enumerate(items)]
    return None


def _query(query: bytes) -> dict[str, list[str]]:
    return parse_qs(query.decode("latin-1"))


def top_k_param(query: bytes) -> int:
    values = _query(query).get("top_k")
    if not values:
        return DEFAULT_TOP_K
    try:
        k = int(values[-1])
    except ValueError:
        k = 0
    if k < 1:
        raise InputError("top_k must be a positive integer", where="top_k")
    return k


def raw_param(query: bytes) -> bool:
    """``?raw=true``: each prediction also carries the model's own output tensor."""
    values = _query(query).get("raw")
    if not values:
        return False
    value = values[-1].strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InputError("raw must be true or false", where="raw")


def decode_threads() -> int:
    """The decode pool's size: the CPUs this process may run on, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_DECODE_THREADS, cpus))


_pool: ThreadPoolExecutor | None = None


def decode_pool() -> ThreadPoolExecutor:
    """One bounded pool per process for every image decode (created on first use: after a
    ``--workers`` fork, never before), apart from the default executor the models use."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(decode_threads(), thread_name_prefix="packserve-images")
    return _pool


class ImageRequestDecoder:
    """Compiled once per model version of an image bundle.

    ``parallel``: the images of one request decode concurrently (False: one after the other
    in one pool thread, Session 3's behaviour and the benchmark's baseline). Every decode runs
    in :func:`decode_pool`.
    """

    def __init__(
        self, manifest: Manifest, version: str, *, max_batch: int, parallel: bool = True
    ) -> None:
        self.pipeline = ImagePipeline(manifest)
        self.max_batch = max_batch
        self.version = version
        self.parallel = parallel
        self.classes = list(manifest.outputs.classes or [])

    async def read(
        self, headers: dict[bytes, bytes], receive: Receive, limit: int
    ) -> tuple[list[bytes] | None, bytes]:
        """Read the body: (its images, b"") or, for JSON without images, (None, the body).

        A multipart upload is parsed as it streams in (:mod:`.multipart`: its limits apply
        part by part); every other body is read whole, capped at ``limit``."""
        if _media(headers) == b"multipart/form-data":
            parts = FileParts(
                boundary_of(headers.get(b"content-type", b"")),
                max_files=self.max_batch,
                max_file_bytes=self.pipeline.spec.max_bytes,
            )
            async for chunk in body_chunks(receive, headers, limit):
                parts.write(chunk)
            return parts.files(), b""
        body = await read_body(receive, headers, limit)
        return self.images(headers, body), body

    def images(self, headers: dict[bytes, bytes], body: bytes) -> list[bytes] | None:
        """The encoded images of a whole (non-multipart) body; None: JSON without images."""
        media = _media(headers)
        if media in IMAGE_MEDIA:
            blobs = [body]
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

    async def feeds(
        self, blobs: list[bytes], where: str = "image {}", single: str = "image"
    ) -> Feeds:
        """Decode + preprocess off the event loop, the images of one request concurrently
        (Pillow releases the GIL while decoding and resizing). Errors name image ``i`` as
        ``where.format(i)`` (``single`` when there is one); the first failing image in
        request order is the one reported."""
        pipeline = self.pipeline
        if not blobs:
            raise ImageError("no images given", where="images")
        names = [where.format(i) for i in range(len(blobs))] if len(blobs) > 1 \
            else [single]
        loop = asyncio.get_running_loop()
        pool = decode_pool()
        if len(blobs) == 1 or not self.parallel:  # one pool thread, one image after the other
            tensor = await loop.run_in_executor(pool, self._sequential, blobs, names)
            return {pipeline.input: tensor}
        batch = np.empty((len(blobs), *pipeline.instance_shape), pipeline.dtype)
        done = await asyncio.gather(  # each thread writes its row: no stacking on the loop
            *(loop.run_in_executor(pool, self._into, batch, i, b, n)
              for i, (b, n) in enumerate(zip(blobs, names, strict=True))),
            return_exceptions=True,
        )
        for item in done:
            if isinstance(item, BaseException):
                raise item
        return {pipeline.input: batch}

    def _into(self, batch: np.ndarray, i: int, blob: bytes, name: str) -> None:
        batch[i] = self.pipeline.instance(blob, name)

    def _sequential(self, blobs: list[bytes], names: list[str]) -> np.ndarray:
        return np.stack([self.pipeline.instance(b, n) for b, n in zip(blobs, names, strict=True)])

    def _items(self, pred: Prediction, k: int, raw: bool) -> list[dict[str, Any]]:
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
        if raw and pred.raw is not None:
            named = {name: arr.tolist() for name, arr in pred.raw.items()}
            for i, item in enumerate(items):
                item["outputs"] = {name: rows[i] for name, rows in named.items()}
        return items

    def encode(self, pred: Prediction, *, top_k: int, batch: bool, raw: bool = False) -> bytes:
        items = self._items(pred, top_k, raw)
        if batch:
            return orjson.dumps(
                {"predictions": items, "batch_size": len(items), "model_version": self.version}
            )
        return orjson.dumps({**items[0], "model_version": self.version})


__all__ = ["DEFAULT_TOP_K", "IMAGE_MEDIA", "ImageRequestDecoder", "b64_image", "decode_pool",
           "decode_threads", "json_images", "raw_param", "top_k_param"]

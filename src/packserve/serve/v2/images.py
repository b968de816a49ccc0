"""Encoded images through V2 (#17): the ``BYTES`` input of an image bundle, Triton-style.

An image bundle takes, besides its preprocessed tensor (clients that preprocess themselves),
one ``BYTES`` input (``"image"``, see :func:`~packserve.serve.v2.metadata.image_input`) with
one element per image, shape ``[n]`` or ``[n, 1]``. In JSON each element is a base64 string
(a ``data:`` URL too), as JSON cannot hold bytes; with the binary tensor extension each
element is the file's bytes behind a 4-byte little-endian length (tritonclient's
``set_data_from_numpy(..., binary_data=True)`` on an object array of ``bytes``). A request
sends the images or the tensor, not both.

The images go through the same decoder as ``/predict`` (limits, safe decoding, parallel
preprocessing in the decode pool, then ``handle.infer``); V2 answers a bad element with the
protocol's 400 (413 for one over the bundle's byte or pixel limit), naming the element.
"""

from __future__ import annotations

import binascii
import math
from base64 import b64decode
from collections.abc import Mapping
from typing import Any

from packserve.errors import (
    BadRequestError,
    ImageError,
    ImageTooLargeError,
    UnsupportedMediaTypeError,
)
from packserve.runtime.inputs import Feeds
from packserve.serve.payloads.images import ImageRequestDecoder
from packserve.serve.v2.arrays import bytes_elements, nested_flat

__all__ = ["image_feeds", "image_input_blobs"]


def _bad(message: str) -> BadRequestError:
    return BadRequestError(message)


def _b64(value: Any, where: str, i: int) -> bytes:
    if type(value) is not str:
        raise _bad(f"{where}: element {i} must be a base64 string")
    if value.startswith("data:"):  # data:image/png;base64,....
        value = value.partition(",")[2]
    try:
        return b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"{where}: element {i} is not valid base64") from None


def image_input_blobs(
    item: Mapping[str, Any], where: str, shape: tuple[int, ...], binary: memoryview | None,
    max_rows: int | None,
) -> list[bytes]:
    """The encoded images of the BYTES input ``item`` (already split off the binary part
    when it carries ``binary_data_size``); 400 for a wrong datatype, shape or element."""
    datatype = item.get("datatype")
    if datatype != "BYTES":
        raise _bad(f"{where}: datatype is {str(datatype)[:20]}, encoded images are BYTES "
                   "(one element per image)")
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
        raise _bad(f"{where}: shape {list(shape)} is not [n] or [n, 1] (one element per image)")
    n = shape[0]
    if n == 0:
        raise _bad(f"{where}: no images given (batch dimension is 0)")
    if max_rows is not None and n > max_rows:
        raise _bad(f"{where}: {n} images exceed this server's limit of {max_rows} per request")
    if binary is not None:
        return list(bytes_elements(binary, math.prod(shape), where, text=False).tolist())
    data = item.get("data")
    if not isinstance(data, list):
        raise _bad(f"{where}: 'data' must be a JSON array of base64 strings")
    flat = nested_flat(data, shape, where)
    return [_b64(v, where, i) for i, v in enumerate(flat)]


async def image_feeds(decoder: ImageRequestDecoder, blobs: list[bytes], name: str) -> Feeds:
    """Decode + preprocess ``blobs`` like ``/predict`` does; errors in V2's terms."""
    try:
        return await decoder.feeds(
            blobs, where=f"input {name!r} element {{}}", single=f"input {name!r} element 0"
        )
    except ImageTooLargeError:
        raise
    except (ImageError, UnsupportedMediaTypeError) as exc:
        raise _bad(exc.message) from None

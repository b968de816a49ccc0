"""The image decoder and V2's image input without a server (#17): fast, exact failures.

Parallel decoding is proven structurally: two images of one request meet at a barrier inside
the decode, which only works if they run at the same time (sequential decoding would time
out). Errors are reported for the first failing image in request order, however the threads
finish. V2 requests with the BYTES input parse into encoded images, not feeds.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from pictures import encode, picture

import packserve
from packserve.errors import BadRequestError, ImageError, InputError
from packserve.serve.payloads.images import ImageRequestDecoder, decode_threads, raw_param
from packserve.serve.v2.codec import parse_infer_request


def _decoder(image_bundle: Path, *, parallel: bool = True) -> ImageRequestDecoder:
    return ImageRequestDecoder(packserve.load(image_bundle).manifest, "1", max_batch=8,
                               parallel=parallel)


@pytest.mark.skipif(decode_threads() < 2, reason="one CPU: the pool has one thread")
def test_images_of_one_request_decode_at_the_same_time(image_bundle: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    blobs = [encode(picture(20, 20, s), "PNG") for s in (1, 2)]
    for parallel, meets in ((True, True), (False, False)):
        dec = _decoder(image_bundle, parallel=parallel)
        barrier = threading.Barrier(2, timeout=2)
        real = dec.pipeline.instance
        met: list[bool] = []

        def meeting(item: Any, where: str = "image", real: Any = real,
                    barrier: threading.Barrier = barrier, met: list[bool] = met) -> np.ndarray:
            try:
                barrier.wait()
                met.append(True)
            except threading.BrokenBarrierError:
                met.append(False)
            return real(item, where)  # type: ignore[no-any-return]

        monkeypatch.setattr(dec.pipeline, "instance", meeting)
        feeds = asyncio.run(dec.feeds(blobs))
        assert next(iter(feeds.values())).shape == (2, 3, 32, 32)
        assert all(met) is meets and len(met) == 2


def test_the_first_failing_image_in_request_order_is_reported(
    image_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dec = _decoder(image_bundle)
    real = dec.pipeline.instance

    def slow_first(item: Any, where: str = "image") -> np.ndarray:
        if where == "image 1":
            time.sleep(0.3)  # image 1 fails last; image 3 fails first
        return real(item, where)  # type: ignore[no-any-return]

    monkeypatch.setattr(dec.pipeline, "instance", slow_first)
    good = encode(picture(20, 20, 3), "PNG")
    with pytest.raises(ImageError, match="^image 1:"):
        asyncio.run(dec.feeds([good, good[:30], good, b"\x89PNG\r\n\x1a\n broken"]))


def test_raw_param() -> None:
    assert raw_param(b"") is False and raw_param(b"top_k=3") is False
    assert raw_param(b"raw=true") and raw_param(b"raw=1&top_k=2") and raw_param(b"raw=ON")
    assert raw_param(b"raw=false") is False and raw_param(b"raw=0") is False
    with pytest.raises(InputError, match="raw"):  # 422
        raw_param(b"raw=maybe")


def test_v2_request_with_the_bytes_input(image_bundle: Path) -> None:
    m = packserve.load(image_bundle).manifest
    png = encode(picture(20, 20, 4), "PNG")
    doc = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2, 1],
                       "data": [[base64.b64encode(png).decode()],
                                ["data:image/png;base64," + base64.b64encode(png).decode()]]}]}
    req = parse_infer_request(orjson.dumps(doc), m, max_rows=8)
    assert req.images == [png, png] and req.feeds == {} and req.rows == 2
    assert [o.name for o in req.outputs] == ["label", "probabilities"]
    with pytest.raises(BadRequestError, match=r"takes \['input', 'image'\]"):
        parse_infer_request(b'{"inputs": [{"name": "pixels", "datatype": "BYTES", "shape": [1], '
                            b'"data": ["x"]}]}', m)
    both = {"inputs": [*doc["inputs"], {"name": "input", "datatype": "FP32",  # type: ignore[list-item]
                                        "shape": [1, 3, 32, 32], "data": [0.0] * 3072}]}
    with pytest.raises(BadRequestError, match="not both"):
        parse_infer_request(orjson.dumps(both), m)
    with pytest.raises(BadRequestError, match="limit of 1 per request"):
        parse_infer_request(orjson.dumps(doc), m, max_rows=1)
    blob = b"".join(len(b).to_bytes(4, "little") + b for b in (png, png))
    header = orjson.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2],
                                       "parameters": {"binary_data_size": len(blob)}}]})
    req = parse_infer_request(header + blob, m, header_length=len(header))
    assert req.images == [png, png]

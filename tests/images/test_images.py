"""Image bundles end to end (#17): pack with preprocessing, send images over real HTTP.

Every accepted form (raw JPEG/PNG/WebP, multipart with one or several files, base64 JSON)
must equal ``packserve.load(...).predict_images`` on the same bytes; a hostile battery
gets 4xx or a documented conversion, never a 5xx, and the server stays healthy.
"""

from __future__ import annotations

import base64
import io
import shutil
import struct
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from pictures import CLASSES, encode, picture

import packserve
from helpers.server import Server
from packserve.errors import PackError


def _probs(item: dict[str, object]) -> dict[str, float]:
    return {t["label"]: t["probability"] for t in item["top_k"]}  # type: ignore[attr-defined,index]


def _expected(image_bundle: Path, blobs: list[bytes]) -> list[dict[str, float]]:
    pred = packserve.load(image_bundle).predict_images(blobs)
    assert pred.probabilities is not None
    return [dict(zip(CLASSES, row, strict=True)) for row in pred.probabilities.tolist()]


def _close(got: dict[str, float], want: dict[str, float]) -> None:
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert got[k] == pytest.approx(v, abs=1e-5)


def test_pack_records_preprocess_and_refuses_a_mismatch(image_bundle: Path, tmp_path: Path) -> None:
    from packserve.pack.images import record_preprocess

    m = packserve.load(image_bundle).manifest
    assert m.preprocess is not None and m.preprocess.crop == (32, 32)
    assert m.outputs.classes == CLASSES
    copy = tmp_path / "copy"
    shutil.copytree(image_bundle, copy)
    with pytest.raises(PackError, match=r"makes instances \[3, 30, 30\]"):
        record_preprocess(copy, {"resize": 30, "crop": [30, 30]})
    assert not copy.exists()  # a bundle that cannot take its images is not left behind


def test_every_input_form_equals_the_python_api(image_server: Server, image_bundle: Path) -> None:
    pics = [picture(48, 64, 1), picture(90, 40, 2), picture(33, 33, 3)]
    jpeg, png, webp = encode(pics[0], "JPEG", quality=90), encode(pics[1], "PNG"), \
        encode(pics[2], "WEBP", lossless=True)
    want = _expected(image_bundle, [jpeg, png, webp])
    url = f"{image_server.url}/predict"
    with httpx.Client(timeout=30) as c:
        for blob, ctype, w in ((jpeg, "image/jpeg", want[0]), (png, "image/png", want[1]),
                               (webp, "image/webp", w := want[2])):
            r = c.post(url, content=blob, headers={"content-type": ctype}, params={"top_k": 4})
            assert r.status_code == 200, r.text
            body = r.json()
            _close(_probs(body), w)
            assert body["prediction"] == max(w, key=w.__getitem__)
        r = c.post(url, content=png, headers={"content-type": "image/png"}, params={"top_k": 2})
        top = r.json()["top_k"]
        assert len(top) == 2 and top[0]["probability"] >= top[1]["probability"]
        one = c.post(url, files={"file": ("a.jpg", jpeg, "image/jpeg")}, params={"top_k": 9})
        assert one.status_code == 200, one.text
        _close(_probs(one.json()), want[0])
        files = [("files", (f"{i}.bin", b, "application/octet-stream"))
                 for i, b in enumerate((jpeg, png, webp))]
        many = c.post(url, files=files, params={"top_k": 4})
        assert many.status_code == 200, many.text
        assert many.json()["batch_size"] == 3
        for item, w in zip(many.json()["predictions"], want, strict=True):
            _close(_probs(item), w)
        b64 = base64.b64encode(png).decode()
        single = c.post(url, json={"image": "data:image/png;base64," + b64}, params={"top_k": 4})
        _close(_probs(single.json()), want[1])
        inst = c.post(f"{url}/batch", params={"top_k": 4},
                      json={"instances": [{"image": base64.b64encode(b).decode()}
                                          for b in (jpeg, webp)]})
        assert [p["prediction"] for p in inst.json()["predictions"]] == \
            [max(w, key=w.__getitem__) for w in (want[0], want[2])]
        # a client that preprocessed itself sends the tensor
        x = packserve.load(image_bundle).to_feeds(np.zeros((1, 3, 32, 32), np.float32))
        r = c.post(url, json={"inputs": {"input": x["input"][0].tolist()}})
        assert r.status_code == 200, r.text


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _huge_header_png(w: int, h: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b""))


def _gif_animation() -> bytes:
    from PIL import Image

    frames = [Image.fromarray(picture(20, 20, s)).convert("P") for s in (1, 2)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50)
    return buf.getvalue()


def _pil_bytes(mode: str, fmt: str, arr: np.ndarray | None = None, **kw: object) -> bytes:
    from PIL import Image

    img = Image.fromarray(arr) if arr is not None else Image.fromarray(picture(30, 40, 5))
    buf = io.BytesIO()
    (img if arr is not None else img.convert(mode)).save(buf, fmt, **kw)
    return buf.getvalue()


def _battery() -> list[tuple[str, bytes, str, int]]:
    jpeg = encode(picture(64, 64, 7), "JPEG")
    png = encode(picture(40, 40, 8), "PNG")
    bad_crc = bytearray(png)
    bad_crc[29] ^= 0xFF  # the IHDR chunk's CRC
    bomb = encode(np.zeros((2500, 2000), np.uint8), "PNG")  # 5 M pixels from a few KB
    sixteen = _pil_bytes("I;16", "PNG", (np.arange(30 * 40, dtype=np.uint16) * 50).reshape(30, 40))
    return [
        ("decompression bomb", bomb, "image/png", 413),
        ("30000x30000 header", _huge_header_png(30000, 30000), "image/png", 413),
        ("truncated JPEG", jpeg[: len(jpeg) // 2], "image/jpeg", 422),
        ("PNG with a bad CRC", bytes(bad_crc), "image/png", 422),
        ("wrong content type", png, "text/plain", 415),
        ("empty body", b"", "image/png", 422),
        ("GIF animation", _gif_animation(), "image/gif", 422),
        ("CMYK JPEG", _pil_bytes("CMYK", "JPEG"), "image/jpeg", 200),
        ("16-bit PNG", sixteen, "image/png", 200),
        ("palette PNG with transparency", _pil_bytes("P", "PNG", transparency=0), "image/png", 200),
        ("RGBA PNG", _pil_bytes("RGBA", "PNG"), "image/png", 200),
        ("1x1 image", encode(np.full((1, 1, 3), 200, np.uint8), "PNG"), "image/png", 200),
        ("non-image named .jpg", b"GIF? no: just text, " * 20, "image/jpeg", 415),
        ("over max_bytes", b"\x89PNG\r\n\x1a\n" + b"\x00" * 2_100_000, "image/png", 413),
    ]


def test_hostile_images_get_4xx_or_a_documented_conversion(image_server: Server) -> None:
    url = f"{image_server.url}/predict"
    with httpx.Client(timeout=30) as c:
        for name, body, ctype, status in _battery():
            r = c.post(url, content=body, headers={"content-type": ctype})
            assert r.status_code == status, (name, r.status_code, r.text)
            if status != 200:
                assert "error" in r.text and "Traceback" not in r.text, name
        multipart = c.post(url, files={"f": ("cat.jpg", b"not an image at all", "image/jpeg")})
        assert multipart.status_code == 415, multipart.text
        for params, body in (({"top_k": 0}, {"image": ""}), ({}, {"image": "%%%"})):
            assert c.post(url, json=body, params=params).status_code == 422
        assert c.get(f"{image_server.url}/health/ready").status_code == 200
    assert "unhandled error" not in image_server.output()


def test_exif_orientation_is_applied(image_bundle: Path) -> None:
    from PIL import Image

    from packserve.runtime.images import decode

    spec = packserve.load(image_bundle).manifest.preprocess
    assert spec is not None
    img = Image.fromarray(picture(20, 50, 4))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes())
    assert decode(buf.getvalue(), spec).size == (20, 50)  # upright: width and height swapped


def test_raw_output_on_request(image_server: Server, image_bundle: Path) -> None:
    """``?raw=true`` adds the model's own output tensor (here the logits) beside the top-k."""
    blobs = [encode(picture(40, 56, 21), "PNG"), encode(picture(64, 30, 22), "JPEG")]
    want = packserve.load(image_bundle).predict_images(blobs)
    assert want.raw is not None and want.probabilities is not None
    (name, logits), = want.raw.items()
    assert logits.shape == (2, len(CLASSES))
    url = f"{image_server.url}/predict"
    with httpx.Client(timeout=30) as c:
        one = c.post(url, content=blobs[0], headers={"content-type": "image/png"},
                     params={"raw": "true", "top_k": 2})
        assert one.status_code == 200, one.text
        body = one.json()
        np.testing.assert_allclose(body["outputs"][name], logits[0], atol=1e-5)
        assert len(body["top_k"]) == 2 and body["prediction"] in CLASSES
        many = c.post(url, files=[("f", ("a.png", blobs[0])), ("f", ("b.jpg", blobs[1]))],
                      params={"raw": "1"})
        got = [p["outputs"][name] for p in many.json()["predictions"]]
        np.testing.assert_allclose(got, logits, atol=1e-5)
        plain = c.post(url, content=blobs[0], headers={"content-type": "image/png"},
                       params={"raw": "false"})
        assert "outputs" not in plain.json()
        bad = c.post(url, content=blobs[0], headers={"content-type": "image/png"},
                     params={"raw": "maybe"})
        assert bad.status_code == 422 and bad.json()["where"] == "raw"

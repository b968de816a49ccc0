"""Multipart image uploads (#17): python-multipart parses, our limits hold while streaming.

Unit level: the parser is fed chunk by chunk (one byte at a time too) and a limit is refused
at the chunk that crosses it, before the rest of the body exists. Over HTTP: every hostile
upload gets a clear 4xx from a real server, which stays healthy.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from pictures import encode, picture

from helpers.server import Server
from packserve.errors import BadRequestError, ImageTooLargeError, InputError, PackserveError
from packserve.serve.payloads.multipart import MAX_OTHER_PARTS, FileParts, boundary_of

B = b"xyzBOUNDARYxyz"


def _part(data: bytes, *, filename: str | None = "a.png", ctype: str = "image/png",
          name: str = "file") -> bytes:
    disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return (b"--" + B + b"\r\nContent-Disposition: " + disp.encode()
            + b"\r\nContent-Type: " + ctype.encode() + b"\r\n\r\n" + data + b"\r\n")


def _body(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--" + B + b"--\r\n"


def _feed(body: bytes, chunk: int, **limits: int) -> list[bytes]:
    parts = FileParts(B, max_files=limits.get("max_files", 8),
                      max_file_bytes=limits.get("max_file_bytes", 10_000))
    for i in range(0, len(body), chunk):
        parts.write(body[i : i + chunk])
    return parts.files()


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_file_parts_in_order_whatever_the_chunking(chunk: int) -> None:
    a, b = b"\x89PNG first \r\n--not-a-boundary", b"\xff\xd8\xff second"
    body = _body(_part(a), _part(b"a form field", filename=None, ctype="text/plain", name="note"),
                 _part(b, filename=None, ctype="image/jpeg"))
    assert _feed(body, chunk) == [a, b]  # the text field is skipped, the image/* part kept


def test_limits_refuse_at_the_crossing_chunk_not_at_the_end() -> None:
    def chunks(body: bytes, sent: list[int]) -> Iterator[bytes]:
        for i in range(0, len(body), 64):
            sent.append(i)
            yield body[i : i + 64]

    cases: list[tuple[bytes, dict[str, int], type[PackserveError]]] = [
        (_body(_part(b"x" * 5000), _part(b"y" * 50_000)), {"max_file_bytes": 6000},
         ImageTooLargeError),
        (_body(*[_part(b"z" * 100)] * 3, _part(b"w" * 50_000)), {"max_files": 2}, InputError),
    ]
    for body, limits, error in cases:
        sent: list[int] = []
        parts = FileParts(B, max_files=limits.get("max_files", 8),
                          max_file_bytes=limits.get("max_file_bytes", 10_000))
        with pytest.raises(error):
            for chunk in chunks(body, sent):
                parts.write(chunk)
        assert sent[-1] < len(body) // 2  # refused while most of the body was still to come


def test_malformed_bodies_are_400() -> None:
    png = encode(picture(8, 8, 1), "PNG")
    with pytest.raises(BadRequestError, match="no closing boundary"):
        _feed(_part(png), 1 << 20)
    with pytest.raises(BadRequestError, match="no file part"):
        _feed(_body(_part(b"v", filename=None, ctype="text/plain")), 1 << 20)
    with pytest.raises(BadRequestError, match="malformed"):
        _feed(b"--" + B + b"\r\n" + b"X-Junk: " + b"h" * 5000 + b"\r\n\r\n", 1 << 20)
    with pytest.raises(BadRequestError, match="malformed"):
        _feed(b"--" + B + b"\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(20)), 1 << 20)
    fields = [_part(b"v", filename=None, ctype="text/plain")] * (MAX_OTHER_PARTS + 1)
    with pytest.raises(BadRequestError, match="not files"):  # each costs event-loop time
        _feed(_body(_part(png), *fields), 1 << 20)
    assert len(_feed(_body(_part(png), *fields[1:]), 1 << 20)) == 1
    with pytest.raises(BadRequestError, match="boundary"):
        boundary_of(b"multipart/form-data")
    with pytest.raises(BadRequestError, match="70"):
        boundary_of(b"multipart/form-data; boundary=" + b"b" * 71)
    assert boundary_of(b'multipart/form-data; boundary="a b"') == b"a b"


def test_hostile_uploads_over_http(image_server: Server) -> None:
    url = f"{image_server.url}/predict"
    png = encode(picture(20, 20, 2), "PNG")
    ctype = {"content-type": "multipart/form-data; boundary=" + B.decode()}
    cases: list[tuple[str, bytes, dict[str, str], int]] = [
        ("file over max_bytes", _body(_part(b"\x89PNG" + b"\0" * 2_100_000)), ctype, 413),
        ("no closing boundary", _part(png), ctype, 400),
        ("no boundary parameter", _body(_part(png)), {"content-type": "multipart/form-data"}, 400),
        ("no file part", _body(_part(b"v", filename=None, ctype="text/plain")), ctype, 400),
        ("garbage", b"\x00\xff" * 500, ctype, 400),
        ("a part that is not an image", _body(_part(b"plain text")), ctype, 415),
        ("corrupt second image", _body(_part(png), _part(png[:40])), ctype, 422),
    ]
    with httpx.Client(timeout=30) as c:
        for name, body, headers, status in cases:
            r = c.post(url, content=body, headers=headers)
            assert r.status_code == status, (name, r.text)
            assert "Traceback" not in r.text and r.json()["error"], name
        r = c.post(url, content=_body(_part(png), _part(png[:40])), headers=ctype)
        assert r.json()["message"].startswith("image 1"), r.text  # names the image
        ok = c.post(url, content=_body(_part(png), _part(png, filename=None)), headers=ctype)
        assert ok.status_code == 200 and ok.json()["batch_size"] == 2, ok.text
        assert c.get(f"{image_server.url}/health/ready").status_code == 200
    assert "unhandled error" not in image_server.output()

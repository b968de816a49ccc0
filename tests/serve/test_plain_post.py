"""The door's reader before the parser (:func:`plain_post`, issue #15): what it takes, and
that it sends everything else to httptools — which then parses the read as always."""

from __future__ import annotations

import pytest

from packserve.serve.endpoint import SMALL_BODY_BYTES
from packserve.serve.engines.uvicorn_door import header_pairs, plain_post

BODY = b'{"features": [0.1, 0.2]}'


def post(*, line: bytes = b"POST /predict HTTP/1.1", headers: bytes | None = None,
         body: bytes = BODY, length: int | None = None) -> bytes:
    if headers is None:
        headers = b"Host: x\r\nContent-Type: application/json\r\n"
    n = len(body) if length is None else length
    return line + b"\r\n" + headers + b"Content-Length: %d\r\n\r\n" % n + body


def test_a_plain_post_gives_its_path_and_headers_as_the_parser_would() -> None:
    got = plain_post(post(headers=b"Host: x\r\nX-Api-Key:  Key-1 \t\r\n"))
    assert got is not None and got.path == "/predict"
    # names lower-cased, values as sent: an API key is compared as the client sent it
    assert header_pairs(got.raw) == [(b"host", b"x"), (b"x-api-key", b"Key-1"),
                                     (b"content-length", b"%d" % len(BODY))]
    assert plain_post(post(line=b"POST /v2/models/m-1.x_2/infer HTTP/1.1")) is not None
    assert plain_post(post(body=b"", length=0)) is not None


@pytest.mark.parametrize("data", [
    post(line=b"GET /predict HTTP/1.1"),
    post(line=b"POST /predict HTTP/1.0"),
    post(line=b"POST /predict?x=1 HTTP/1.1"),
    post(line=b"POST /pre%64ict HTTP/1.1"),
    post(line=b"POST /predict#f HTTP/1.1"),
    post(line=b"POST http://x/predict HTTP/1.1"),
    post(line=b"POST /pr\xc3\xa9dict HTTP/1.1"),
    post(line=b"POST  /predict HTTP/1.1"),
    post(headers=b"Host: x\r\nTransfer-Encoding: chunked\r\n"),
    post(headers=b"Host: x\r\nExpect: 100-continue\r\n"),
    post(headers=b"Host: x\r\nConnection: close\r\n"),
    post(headers=b"Host: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"),
    post(headers=b"Host: x\r\nContent-Length: 3\r\n"),  # two lengths
    post(headers=b"Host : x\r\n"),  # space before the colon
    post(headers=b"Host: x\nX-A: b\r\n"),  # a bare LF
    post(headers=b"Host: x\r\n folded\r\n"),  # obs-fold
    post(headers=b"Host: x\r\nNoColon\r\n"),
    post(length=len(BODY) + 1),  # the body not all here yet
    post() + post(),  # pipelined: two requests in one read
    post(length=len(BODY) - 1),  # more bytes than declared
    post(body=b"x" * (SMALL_BODY_BYTES + 1)),
    post(headers=b"Host: x\r\n", length=-1),
    post()[:-len(BODY) - 2],  # the head not finished
], ids=lambda d: repr(d[:40]))
def test_anything_else_goes_to_the_parser(data: bytes) -> None:
    assert plain_post(data) is None


def test_the_length_header_is_read_in_any_case_with_spaces() -> None:
    data = b"POST /predict HTTP/1.1\r\ncOnTeNt-LeNgTh: \t%d \r\n\r\n" % len(BODY) + BODY
    assert plain_post(data) is not None
    assert plain_post(b"POST /predict HTTP/1.1\r\ncontent-length: 1e3\r\n\r\n") is None

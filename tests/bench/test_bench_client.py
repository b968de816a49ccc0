"""The raw HTTP/1.1 client: framing, keep-alive, and error classification."""

from __future__ import annotations

import asyncio

import pytest

from packserve.bench.client import Connection, RequestFailed, Target
from packserve.errors import ConfigError


def test_target_parsing() -> None:
    t = Target.parse("http://example.org:8080/api/")
    assert (t.host, t.port, t.prefix) == ("example.org", 8080, "/api")
    assert Target.parse("127.0.0.1:9").base_url == "http://127.0.0.1:9"
    req = t.request("POST", "/predict", b'{"a":1}')
    assert req.startswith(b"POST /api/predict HTTP/1.1\r\nHost: example.org:8080\r\n")
    assert req.endswith(b"Content-Length: 7\r\n\r\n{\"a\":1}")
    with pytest.raises(ConfigError):
        Target.parse("https://example.org")


async def _serve_script(chunks: list[bytes], *, close: bool = False
                        ) -> tuple[asyncio.Server, int]:
    """A raw server that answers every request with ``chunks`` written one by one."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                n = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        n = int(line.split(b":")[1])
                await reader.readexactly(n)
                for c in chunks:
                    writer.write(c)
                    await writer.drain()
                    await asyncio.sleep(0.002)
                if close:
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _run(chunks: list[bytes], n: int = 2, close: bool = False) -> list[tuple[int, int]]:
    async def main() -> list[tuple[int, int]]:
        server, port = await _serve_script(chunks, close=close)
        t = Target("127.0.0.1", port, "")
        conn = Connection(t)
        out = [await conn.request(t.request("POST", "/x", b"{}"), 2.0) for _ in range(n)]
        conn.close()
        server.close()
        return out

    return asyncio.run(main())


def test_content_length_split_across_packets() -> None:
    got = _run([b"HTTP/1.1 200 OK\r\nContent-Le", b"ngth: 5\r\n\r\nab", b"cde"])
    assert got == [(200, 5), (200, 5)]  # second request reuses the connection


def test_chunked_with_trailers_and_status() -> None:
    got = _run([b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"3\r\nabc\r\n", b"2\r\nde\r\n0\r\nX-T: 1\r\n\r\n"])
    assert got == [(503, 5), (503, 5)]


def test_connection_close_reconnects() -> None:
    got = _run([b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"],
               n=3, close=True)
    assert got == [(200, 2)] * 3


def test_closed_mid_response_and_timeout_and_refused() -> None:
    with pytest.raises(RequestFailed) as e:
        _run([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"], n=1, close=True)
    assert e.value.kind == "closed"
    with pytest.raises(RequestFailed) as e:
        _run([b"garbage\r\n\r\n"], n=1)
    assert e.value.kind == "protocol"

    async def silent() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        t = Target("127.0.0.1", port, "")
        conn = Connection(t)
        try:
            await conn.request(t.request("GET", "/"), 0.2)
        finally:
            conn.close()
            server.close()

    with pytest.raises(RequestFailed) as e:
        asyncio.run(silent())
    assert e.value.kind == "timeout"

    from helpers.server import free_port

    async def refused() -> None:
        conn = Connection(Target("127.0.0.1", free_port(), ""))
        await conn.request(b"GET / HTTP/1.1\r\n\r\n", 1.0)

    with pytest.raises(RequestFailed) as e:
        asyncio.run(refused())
    assert e.value.kind == "connect"

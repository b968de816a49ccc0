"""A minimal asyncio HTTP/1.1 keep-alive client for load generation.

Why not httpx: a load generator must spend its CPU on sending, not on building request
objects. Requests here are pre-encoded bytes; a response is parsed only as far as the status
line, ``Content-Length`` / chunked framing and ``Connection: close``. One request at a time per
connection (no pipelining), so a late response never delays an unrelated request's timing.
Failures are classified (``timeout``, ``reset``, ``closed``, ``connect``, ``protocol``) because
"the server reset the connection" and "the server was slow" call for different fixes.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from packserve.errors import ConfigError

ERROR_KINDS = ("timeout", "reset", "closed", "connect", "protocol")


class RequestFailed(Exception):
    """A request got no complete HTTP response; ``kind`` is one of :data:`ERROR_KINDS`."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


@dataclass(frozen=True)
class Target:
    """Where to send: host, port, and the URL path prefix (``http://h:p/prefix``)."""

    host: str
    port: int
    prefix: str

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http":
            raise ConfigError(
                f"bench speaks plain http:// only (got {parts.scheme}://); "
                "benchmark the server directly, not through a TLS proxy"
            )
        if not parts.hostname:
            raise ConfigError(f"no host in URL {url!r}")
        return cls(parts.hostname, parts.port or 80, parts.path.rstrip("/"))

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.prefix}"

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str = "application/json") -> bytes:
        """Pre-encode one request (``path`` is appended to the URL prefix)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        lines = [
            f"{method} {self.prefix}{path} HTTP/1.1",
            f"Host: {host}:{self.port}",
            "User-Agent: packserve-bench",
            "Accept: application/json",
        ]
        if body is not None:
            lines += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head + (body or b"")


class _Protocol(asyncio.Protocol):
    """Accumulates one response at a time and resolves ``waiter`` when it is complete."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, int]] | None = None
        self.lost = False
        self.keep_alive = True
        self._head_end = -1
        self._status = 0
        self._length = -1  # -1 unknown yet, -2 chunked, -3 until close

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        w = self.waiter
        if w is None or w.done():
            return
        try:
            result = self._parse()
        except RequestFailed as exc:
            w.set_exception(exc)
            return
        if result is not None:
            w.set_result(result)

    def eof_received(self) -> bool | None:
        self._fail_or_finish(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_or_finish(exc)

    def _fail_or_finish(self, exc: Exception | None) -> None:
        self.lost = True
        self.keep_alive = False
        w = self.waiter
        if w is None or w.done():
            return
        if exc is None and self._length == -3 and self._head_end >= 0:
            w.set_result((self._status, len(self.buf) - self._head_end))
        elif isinstance(exc, ConnectionResetError | BrokenPipeError):
            w.set_exception(RequestFailed("reset", str(exc)))
        elif exc is not None:
            w.set_exception(RequestFailed("reset", type(exc).__name__))
        else:
            got = "mid-response" if self.buf else "before responding"
            w.set_exception(RequestFailed("closed", f"server closed the connection {got}"))

    def _parse(self) -> tuple[int, int] | None:
        buf = self.buf
        if self._head_end < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > 65536:
                    raise RequestFailed("protocol", "response header too large")
                return None
            self._head_end = end + 4
            head = bytes(buf[:end]).lower()
            if not head.startswith(b"http/1.") or len(head) < 12:
                raise RequestFailed("protocol", "not an HTTP/1.x response")
            try:
                self._status = int(head[9:12])
            except ValueError:
                raise RequestFailed("protocol", "bad status line") from None
            self._length = -3
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name, value = name.strip(), value.strip()
                if name == b"content-length":
                    self._length = int(value)
                elif name == b"transfer-encoding" and b"chunked" in value:
                    self._length = -2
                elif name == b"connection" and b"close" in value:
                    self.keep_alive = False
            if self._status in (204, 304) or 100 <= self._status < 200:
                self._length = 0
        if self._length >= 0:
            if len(buf) - self._head_end >= self._length:
                return self._status, self._length
            return None
        if self._length == -2:
            return self._parse_chunked()
        return None  # read until close

    def _parse_chunked(self) -> tuple[int, int] | None:
        pos, size, buf = self._head_end, 0, self.buf
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            try:
                n = int(bytes(buf[pos:eol]).split(b";")[0], 16)
            except ValueError:
                raise RequestFailed("protocol", "bad chunk size") from None
            pos = eol + 2
            if n == 0:  # last chunk, then optional trailers, then an empty line
                if buf[pos : pos + 2] == b"\r\n" or buf.find(b"\r\n\r\n", pos) >= 0:
                    return self._status, size
                return None
            if len(buf) < pos + n + 2:
                return None
            pos += n + 2
            size += n

    def start(self) -> asyncio.Future[tuple[int, int]]:
        self.buf.clear()
        self._head_end, self._status, self._length = -1, 0, -1
        self.waiter = asyncio.get_running_loop().create_future()
        return self.waiter


def _expire(fut: asyncio.Future[tuple[int, int]], timeout: float) -> None:
    if not fut.done():
        fut.set_exception(RequestFailed("timeout", f"no response within {timeout:g}s"))


class Connection:
    """One keep-alive TCP connection; ``request`` returns (status, body length)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._proto: _Protocol | None = None

    @property
    def usable(self) -> bool:
        p = self._proto
        return p is not None and not p.lost and p.keep_alive and p.transport is not None \
            and not p.transport.is_closing()

    async def connect(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(_Protocol, self.target.host, self.target.port), timeout
            )
        except TimeoutError:
            raise RequestFailed("timeout", "connect timed out") from None
        except OSError as exc:
            raise RequestFailed("connect", exc.strerror or type(exc).__name__) from None
        assert proto.transport is not None
        sock = proto.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._proto = proto

    async def request(self, data: bytes, timeout: float) -> tuple[int, int]:
        """Send pre-encoded ``data``; reconnects first if the server closed an idle connection."""
        if not self.usable:
            self.close()
            await self.connect(timeout)
        proto = self._proto
        assert proto is not None and proto.transport is not None
        fut = proto.start()
        loop = asyncio.get_running_loop()
        sent_at = loop.time()
        proto.transport.write(data)
        # call_later instead of wait_for: no extra task per request on the hot path
        timer = loop.call_later(timeout, _expire, fut, timeout)
        try:
            result = await fut
        except RequestFailed:
            self.close()
            raise
        finally:
            timer.cancel()
        if not proto.keep_alive:
            self.close()
        if loop.time() - sent_at > timeout:
            # a blocked loop can see the response and the expired timer in one iteration
            raise RequestFailed("timeout", f"no response within {timeout:g}s")
        return result

    def close(self) -> None:
        p, self._proto = self._proto, None
        if p is not None and p.transport is not None:
            p.transport.close()


__all__ = ["ERROR_KINDS", "Connection", "RequestFailed", "Target"]

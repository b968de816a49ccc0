"""benchmarks/overload_gen.c (bench_overload's open-loop generator): compiled and run against
an in-test asyncio server that counts what it answered, so the generator's counts are checked
against the server's, not against a guess."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).resolve().parents[2] / "benchmarks"))  # after tests/: no shadowing
import overload_c  # noqa: E402

pytestmark = pytest.mark.skipif(overload_c.have_cc() is None, reason="no C compiler")

ANSWERS = {
    "200": b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\": 1}\r\n",
    "503": b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\ncontent-length: 2\r\n\r\n{}",
    "503-no-ra": b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\n{}",
    "404-chunked": b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
}


@dataclass
class Canned:
    """Answers the i-th request with ANSWERS in turn, ``delay`` s after it arrived."""

    delay: float = 0.0
    sent: Counter[str] = field(default_factory=Counter)
    bodies: list[bytes] = field(default_factory=list)
    n: int = 0

    def protocol(self) -> asyncio.Protocol:
        canned = self

        class P(asyncio.Protocol):
            buf = b""

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.t: asyncio.Transport = transport  # type: ignore[assignment]

            def data_received(self, data: bytes) -> None:
                self.buf += data
                while b"\r\n\r\n" in self.buf:
                    head, rest = self.buf.split(b"\r\n\r\n", 1)
                    length = next(int(ln.split(b":")[1]) for ln in head.split(b"\r\n")
                                  if ln.lower().startswith(b"content-length:"))
                    if len(rest) < length:
                        return
                    canned.bodies.append(rest[:length])
                    self.buf = rest[length:]
                    kind = list(ANSWERS)[canned.n % len(ANSWERS)]
                    canned.n += 1
                    if canned.delay:
                        asyncio.get_running_loop().call_later(canned.delay, self.answer, kind)
                    else:
                        self.answer(kind)

            def answer(self, kind: str) -> None:
                if not self.t.is_closing():
                    self.t.write(ANSWERS[kind])
                    canned.sent[kind] += 1

        return P()


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One compile for the module (the executable is cached by the source's hash)."""
    return tmp_path_factory.mktemp("overload_gen")


@pytest.fixture
def serve() -> Iterator[tuple[Canned, list[str]]]:
    """Start a Canned server on a loop in a thread: put a Canned in the list, get its url."""
    loop = asyncio.new_event_loop()
    urls: list[str] = []
    canned = Canned()
    ready = threading.Event()

    async def main() -> None:
        server = await loop.create_server(canned.protocol, "127.0.0.1", 0)
        urls.append(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(main(), loop).result(10)
    ready.wait(10)
    try:
        yield canned, urls
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_counts_agree_with_the_server(serve: tuple[Canned, list[str]], build_dir: Path) -> None:
    canned, urls = serve
    r = overload_c.run_open_loop(urls[0], b'{"features": [1, 2]}', rate=2000, duration=0.5,
                                 timeout=0.5, connections=8, pin=None, tmp=build_dir)
    assert r["scheduled"] == 1001 and r["sent"] == 1001 and r["answered"] == 1001
    assert r["unanswered"] == 0 and r["late"] == 0
    assert canned.bodies == [b'{"features": [1, 2]}'] * 1001
    assert r["ok"] == canned.sent["200"]
    assert r["s503"] == canned.sent["503"] + canned.sent["503-no-ra"]
    assert r["no_retry_after"] == canned.sent["503-no-ra"] > 0
    assert r["other"] == canned.sent["404-chunked"] and r["statuses"] == {"404": r["other"]}
    assert 0 < float(str(r["p50_ms"])) <= float(str(r["p99_ms"])) <= float(str(r["max_ms"])) < 500
    assert r["read_errors"] == r["connect_errors"] == r["write_errors"] == 0
    assert 0 <= float(str(r["wrk_cpu"])) < 1


def test_answers_after_the_timeout_are_late(serve: tuple[Canned, list[str]], build_dir: Path) -> None:
    canned, urls = serve
    canned.delay = 0.25  # every answer later than the 0.1 s timeout
    r = overload_c.run_open_loop(urls[0], b"{}", rate=200, duration=0.3, timeout=0.1,
                                 connections=4, pin=None, tmp=build_dir)
    assert r["scheduled"] == 61
    assert r["ok"] == r["s503"] == r["other"] == 0
    answered = int(str(r["answered"]))
    assert r["late"] == answered > 0
    assert answered <= sum(canned.sent.values()) <= answered + 4  # + one in flight a connection
    # one request outstanding per connection: the rest were sent late or never
    assert r["unanswered"] == 61 - answered > 0
    assert r["p50_ms"] == -1

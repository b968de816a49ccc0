"""Admission's door on uvicorn (issue #15): refusals written by the parser callback.

A real uvicorn server on 127.0.0.1 with packserve's app and door protocol, run in this
process so the test can see whether the door answered (a spy around ``app.door``) and can
switch it off to get the ASGI path's answer from the same server in the same state. The
model's one admission slot (``max_in_flight=1``) is held by a request whose body never
completes: every other prediction is refused, deterministically. Raw sockets: the bytes on
the wire are the subject.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn

from helpers.metrics import sample, sample_sum
from helpers.models import make_slow_bundle
from helpers.server import free_port, read_response
from packserve.serve.app import PackserveApp, create_app
from packserve.serve.door import Refusal
from packserve.serve.engines.uvicorn import uvicorn_config
from packserve.serve.engines.uvicorn_door import DoorProtocol
from packserve.serve.saturation import Rounds
from packserve.serve.settings import ServeSettings

KEY = b"door-key"
BODY = b'{"features": [0.1, 0.2, 0.3, 0.4]}'


def _post(path: bytes = b"/predict", *, extra: bytes = b"", body: bytes = BODY) -> bytes:
    return (b"POST " + path + b" HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"x-api-key: " + KEY + b"\r\n" + extra +
            b"content-length: %d\r\n\r\n" % len(body) + body)


@dataclass
class Spy:
    """Wraps the app's door: counts what it answered; ``on=False`` sends all to the ASGI path."""

    app: PackserveApp
    on: bool = True
    answered: list[Refusal] = field(default_factory=list)
    #: how many of ``answered`` were answered before the parser (a plain POST in one read)
    before: int = 0

    def pressed(self) -> bool:
        assert self.app.door is not None
        return self.app.door.pressed()

    @property
    def rounds(self) -> Rounds:
        assert self.app.door is not None
        return self.app.door.rounds

    @property
    def keyed(self) -> bool:
        assert self.app.door is not None
        return self.app.door.keyed

    def __call__(self, method: str, path: str, headers: Sequence[tuple[bytes, bytes]], *,
                 small: bool | None = None) -> Refusal | None:
        if not self.on:
            return None
        assert self.app.door is not None
        got = self.app.door(method, path, headers, small=small)
        if got is not None:
            self.answered.append(got)
            self.before += small is not None
        return got


@dataclass
class Srv:
    url: str
    port: int
    app: PackserveApp
    spy: Spy
    server: uvicorn.Server

    def sock(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", headers={"x-api-key": KEY.decode()}).text


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_slow_bundle(tmp_path_factory.mktemp("door") / "slow", width=16, layers=1)


@pytest.fixture
def srv(bundle: Path) -> Iterator[Srv]:
    port = free_port()
    settings = ServeSettings(model_path=bundle, host="127.0.0.1", port=port, max_in_flight=1,
                             inference_threads=1, api_key=KEY.decode(), log_level="warning",
                             server="uvicorn")
    app = create_app(settings)
    spy = Spy(app)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, loop="uvloop",
                            http=type("SpyDoor", (DoorProtocol,), {"door": spy}),
                            lifespan="on", access_log=False, server_header=False,
                            log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 60
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                break
        assert time.monotonic() < end and thread.is_alive(), "server not ready"
        time.sleep(0.05)
    try:
        yield Srv(url, port, app, spy, server)
    finally:
        server.should_exit = True
        thread.join(30)


@contextlib.contextmanager
def held(s: Srv) -> Iterator[socket.socket]:
    """The model's one slot held by a request whose body is not complete; then it completes
    (and must be answered 200)."""
    hold = s.sock()
    request = _post()
    hold.sendall(request[:-5])
    end = time.monotonic() + 10
    while s.app.admission.in_progress("slow") < 1:
        assert time.monotonic() < end, "the holding request was never admitted"
        time.sleep(0.005)
    try:
        yield hold
    finally:
        hold.sendall(request[-5:])
        head, _ = read_response(hold)
        hold.close()
        assert head.startswith(b"HTTP/1.1 200"), head


def undated(head: bytes) -> bytes:
    return b"\r\n".join(line for line in head.split(b"\r\n") if not line.lower().startswith(b"date:"))


def exchange(s: Srv, request: bytes) -> bytes:
    sock = s.sock()
    try:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data and not request.lower().count(b"connection: close"):
                head, _, rest = data.partition(b"\r\n\r\n")
                if len(rest) >= int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0]):
                    break
        return data
    finally:
        sock.close()


@pytest.mark.parametrize("request_bytes", [
    _post(), _post(extra=b"connection: close\r\n"), _post(b"/models/slow/predict/batch"),
    _post(b"/v2/models/slow/infer", body=b"{}"),
], ids=["keep-alive", "close", "batch", "v2"])
def test_a_door_refusal_is_the_asgi_refusal_to_the_byte(srv: Srv, request_bytes: bytes) -> None:
    with held(srv):
        door = exchange(srv, request_bytes)
        assert len(srv.spy.answered) == 1  # the door answered it
        srv.spy.on = False
        asgi = exchange(srv, request_bytes)
        srv.spy.on = True
        assert len(srv.spy.answered) == 1
    # a plain POST in one read is answered before the parser; "connection: close" inside it
    assert srv.spy.before == (b"connection:" not in request_bytes)
    assert door.startswith(b"HTTP/1.1 503 Service Unavailable\r\ndate: ")
    assert b"\r\nretry-after: 1\r\n" in door
    assert undated(door) == undated(asgi)


def test_two_door_refusals_then_health_on_one_connection(srv: Srv) -> None:
    with held(srv):
        sock = srv.sock()
        try:
            buf = bytearray()
            for split in (False, True):
                if split:  # the body arrives after the answer: skipped, not parsed as a request
                    sock.sendall(_post()[:-len(BODY)])
                    head, _ = read_response(sock, buf)
                    time.sleep(0.05)
                    sock.sendall(BODY)
                else:
                    sock.sendall(_post())
                    head, _ = read_response(sock, buf)
                assert head.startswith(b"HTTP/1.1 503") and b"connection: close" not in head
            sock.sendall(b"GET /health/ready HTTP/1.1\r\nhost: x\r\n\r\n")
            head, body = read_response(sock, buf)
            assert head.startswith(b"HTTP/1.1 200"), head
            assert not buf
        finally:
            sock.close()
    assert len(srv.spy.answered) == 2
    assert srv.spy.before == 1  # the first before the parser, the split one inside it


def test_refusals_before_the_parser_keep_the_connection_alive_while_it_is_used(srv: Srv) -> None:
    """Answers before the parser arm the keep-alive timer once and push it back: a
    connection in use is never closed under the client, an idle one still is."""
    srv.server.config.timeout_keep_alive = 1
    try:
        with held(srv):
            sock = srv.sock()
            try:
                buf = bytearray()
                for pause in (0.0, 0.6, 0.6, 0.6):  # 1.8 s in all, never 1 s idle
                    time.sleep(pause)
                    sock.sendall(_post())
                    head, _ = read_response(sock, buf)
                    assert head.startswith(b"HTTP/1.1 503"), head
                assert srv.spy.before == 4
                sock.settimeout(5)
                started = time.monotonic()
                assert sock.recv(1) == b""  # idle: closed by the server
                assert 0.5 < time.monotonic() - started < 3
            finally:
                sock.close()
    finally:
        srv.server.config.timeout_keep_alive = 5


def test_a_connection_close_request_is_closed_after_the_503(srv: Srv) -> None:
    with held(srv):
        sock = srv.sock()
        try:
            sock.sendall(_post(extra=b"connection: close\r\n"))
            data = b""
            while chunk := sock.recv(65536):  # EOF: the server closed it
                data += chunk
        finally:
            sock.close()
    assert data.startswith(b"HTTP/1.1 503") and b"\r\nconnection: close\r\n" in data
    assert len(srv.spy.answered) == 1


def test_a_refusal_pipelined_behind_a_request_in_progress_keeps_its_order(srv: Srv) -> None:
    """The door answers at parse time; a request behind one not answered yet must wait."""
    with held(srv):
        sock = srv.sock()
        try:
            sock.sendall(b"GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n" + _post())
            buf = bytearray()
            first, _ = read_response(sock, buf)
            second, _ = read_response(sock, buf)
            assert first.startswith(b"HTTP/1.1 200"), first
            assert second.startswith(b"HTTP/1.1 503"), second
            assert srv.spy.answered == []  # the ASGI path answered the pipelined one
            sock.sendall(_post())  # nothing in progress now: the door again
            third, _ = read_response(sock, buf)
            assert third.startswith(b"HTTP/1.1 503") and len(srv.spy.answered) == 1
        finally:
            sock.close()


def test_door_refusals_are_counted_like_any_refusal(srv: Srv) -> None:
    with held(srv):
        for _ in range(3):
            assert exchange(srv, _post()).startswith(b"HTTP/1.1 503")
        assert exchange(srv, _post(b"/models/slow/predict")).startswith(b"HTTP/1.1 503")
        text = srv.metrics()
    assert len(srv.spy.answered) == 4
    assert sample(text, "packserve_admission_rejected_total", model="slow", reason="in_flight") == 4
    assert sample(text, "packserve_requests_total", route="/predict", method="POST", status="503") == 3
    assert sample_sum(text, "packserve_requests_total", route="/models/{name}/predict",
                      method="POST", status="503") == 1  # ("}" in the label: not sample())
    assert sample_sum(text, "packserve_request_duration_seconds_count", route="/predict") >= 3


def test_the_door_leaves_what_it_must_not_answer_to_the_asgi_path(srv: Srv) -> None:
    """No key: 401; an unknown model: 404; a large or chunked body: 503 that closes;
    draining: 503 that closes. None of them answered by the door."""
    with held(srv):
        no_key = _post().replace(b"x-api-key: " + KEY + b"\r\n", b"")
        assert exchange(srv, no_key).startswith(b"HTTP/1.1 401")
        other_case = _post().replace(KEY, KEY.upper())  # keys are compared as sent
        assert exchange(srv, other_case).startswith(b"HTTP/1.1 401")
        assert exchange(srv, _post(b"/models/nope/predict")).startswith(b"HTTP/1.1 404")
        large = exchange(srv, _post(body=BODY.ljust(70_000)))
        assert large.startswith(b"HTTP/1.1 503") and b"connection: close" in large
        assert srv.spy.answered == []
        srv.app.serving.draining = True
        try:
            draining = exchange(srv, _post())
        finally:
            srv.app.serving.draining = False
        assert draining.startswith(b"HTTP/1.1 503") and b"\r\nconnection: close\r\n" in draining
        assert srv.spy.answered == []


def test_the_uvicorn_engine_installs_the_door_unless_told_not_to(bundle: Path) -> None:
    on = create_app(ServeSettings(model_path=bundle))
    assert issubclass(uvicorn_config(on.settings, on).http, DoorProtocol)  # type: ignore[arg-type]
    off = create_app(ServeSettings(model_path=bundle, admission_door=False))
    assert off.door is None and uvicorn_config(off.settings, off).http == "httptools"
    logged = create_app(ServeSettings(model_path=bundle, access_log=True))
    assert logged.door is None  # the access log's lines come from the ASGI path


def test_a_client_that_does_not_read_its_answers_is_left_to_flow_control(srv: Srv) -> None:
    """Pipelined refusals from a client that never reads: once the transport's buffer is
    over its high-water mark the door stops answering at parse time (uvicorn then queues
    the requests and stops reading), so the server's buffer stays bounded."""
    with held(srv):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a slow reader
        sock.connect(("127.0.0.1", srv.port))
        burst = _post() * 40000  # ~7 MB of requests, ~10 MB of answers: past the kernel buffers

        def send() -> None:
            with contextlib.suppress(OSError):  # closed under it at the end
                sock.sendall(burst)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        time.sleep(3)  # the server reads what it will; the client never reads
        buffered = max(
            (c.transport.get_write_buffer_size() for c in list(srv_connections(srv))), default=0
        )
        sock.close()
        sender.join(10)
    assert 0 < len(srv.spy.answered) < 40000
    assert buffered < 400_000, buffered


def srv_connections(s: Srv) -> list[DoorProtocol]:
    return [c for c in s.server.server_state.connections if isinstance(c, DoorProtocol)]


def test_the_engine_records_each_clients_wait_between_its_predictions(srv: Srv) -> None:
    """Rounds: the gap between two POSTs on one connection (GETs are not predictions)."""
    rounds = srv.spy.rounds
    rounds.mean = rounds.turns = 0.0
    sock = srv.sock()
    try:
        buf = bytearray()
        for _ in range(3):
            sock.sendall(b"GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n")
            read_response(sock, buf)
            time.sleep(0.02)
        assert rounds.mean == 0.0
        for _ in range(3):
            sock.sendall(_post())
            head, _ = read_response(sock, buf)
            assert head.startswith(b"HTTP/1.1 200"), head
            time.sleep(0.02)
    finally:
        sock.close()
    assert 0.0 < rounds.mean <= rounds.cap  # two gaps of >= 20 ms, each capped
    assert 0.0 < rounds.turns < 2  # no other client's prediction in between

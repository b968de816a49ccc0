"""Admission control (issue #15): overload is refused at the door, before the body is read.

Real server, the slow model in a thread (one inference thread), so the amount of accepted
work is known exactly: a bound of 2 accepted requests, the third gets 503 + Retry-After at
once — with only its headers sent. A request whose deadline passes while it waits for the
model gets 504 and is not computed; health stays fast meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from helpers.metrics import sample_sum as _metric
from helpers.models import make_slow_bundle
from helpers.server import read_response, running_server
from packserve.serve.admission import Admission, LoopClock
from packserve.serve.handle import ModelHandle
from packserve.serve.offload import CostModel

ARGS = ("--max-in-flight", "2", "--inference-threads", "1", "--batching")




def _body(rows: int) -> bytes:
    return json.dumps({"instances": [{"features": [0.1] * 4}] * rows}).encode()


@pytest.fixture(scope="module")
def slow_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_slow_bundle(tmp_path_factory.mktemp("adm") / "slow")


def _busy(url: str, n: int, rows: int = 512) -> tuple[list[threading.Thread], list[int]]:
    codes: list[int] = []

    def send() -> None:
        with httpx.Client(timeout=60) as c:
            codes.append(c.post(f"{url}/predict/batch", content=_body(rows),
                                headers={"content-type": "application/json"}).status_code)

    threads = [threading.Thread(target=send) for _ in range(n)]
    for t in threads:
        t.start()
    return threads, codes


def _wait_in_flight(url: str, n: int) -> None:
    end = time.monotonic() + 20
    while time.monotonic() < end:
        m = httpx.get(f"{url}/metrics").text
        if _metric(m, "packserve_requests_in_flight") >= n + 1:
            return
        time.sleep(0.01)
    raise AssertionError(f"{n} requests never in flight")


@pytest.mark.usefixtures("engine")
@pytest.mark.parametrize("batching", [False, True])
def test_beyond_the_bound_503_with_retry_after_before_the_body(
    slow_bundle: Path, batching: bool
) -> None:
    args = ARGS if batching else ARGS[:-1]
    with running_server(slow_bundle, *args) as srv:
        threads, codes = _busy(srv.url, 2)
        _wait_in_flight(srv.url, 2)
        # only the headers: the answer comes at once, the body is never waited for
        # (a server that waited for the body would never answer: recv would time out)
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        try:
            sock.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                         b"content-length: 100000\r\n\r\n")
            head = sock.recv(65536)
        finally:
            sock.close()
        assert head.startswith(b"HTTP/1.1 503"), head[:200]
        assert b"retry-after: 1" in head.lower()
        assert b"connection: close" in head.lower()  # the body is never read
        r = httpx.get(f"{srv.url}/health/ready", timeout=5)  # health answers under overload
        assert r.status_code == 200
        v2 = httpx.post(f"{srv.url}/v2/models/slow/infer", json={"inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0.1] * 4}]})
        assert v2.status_code == 503 and "retry-after" in v2.headers and list(v2.json()) == ["error"]
        for t in threads:
            t.join(60)
        assert codes == [200, 200]
        m = httpx.get(f"{srv.url}/metrics").text
        assert _metric(m, "packserve_admission_rejected_total", model="slow", reason="in_flight") == 2
        assert httpx.post(f"{srv.url}/predict", json={"features": [0.1] * 4}).status_code == 200


@pytest.mark.usefixtures("engine")
def test_a_small_refused_request_keeps_its_connection(slow_bundle: Path) -> None:
    """A door refusal of a small request keeps the connection (a reconnect per refusal would
    triple what shedding costs: uvicorn skips the unread body, granian reads and discards it
    first), and the next request on it is parsed and answered correctly."""
    with running_server(slow_bundle, *ARGS[:-1]) as srv:
        body = json.dumps({"features": [0.1] * 4}).encode()
        expected = httpx.post(f"{srv.url}/predict", content=body,
                              headers={"content-type": "application/json"}).json()
        threads, codes = _busy(srv.url, 2, rows=1000)  # busy through the 0.3 s wait below
        _wait_in_flight(srv.url, 2)
        request = (b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json"
                   b"\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        try:
            for split in (True, False):  # two refusals on one connection
                if split:  # the body not there yet when refused (granian: still kept)
                    sock.sendall(request[: -len(body)])
                    time.sleep(0.3)
                    sock.sendall(body)
                else:
                    sock.sendall(request)
                head, _ = _response(sock)
                assert head.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in head.lower()
                assert b"connection: close" not in head.lower()
            for t in threads:
                t.join(60)
            assert codes == [200, 200]
            sock.sendall(request)  # then served on the same connection
            head, answer = _response(sock)
            assert head.startswith(b"HTTP/1.1 200"), head
            assert json.loads(answer) == expected
        finally:
            sock.close()


def test_a_client_leaving_while_its_refused_body_is_drained_is_a_499(
    slow_bundle: Path, engine: str
) -> None:
    """Headers of a small body, then the client leaves: granian (waiting for the body to
    drain it) sends nothing, a 499; uvicorn never waits for it (503 into the closed socket)."""
    status = "499" if engine == "granian" else "503"
    with running_server(slow_bundle, *ARGS[:-1]) as srv:
        threads, codes = _busy(srv.url, 2, rows=1000)
        _wait_in_flight(srv.url, 2)
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        sock.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json"
                     b"\r\ncontent-length: 100\r\n\r\n{")
        time.sleep(0.2)
        sock.close()
        end = time.monotonic() + 10
        while time.monotonic() < end:
            m = httpx.get(f"{srv.url}/metrics").text
            if _metric(m, "packserve_requests_total", route="/predict", status=status) >= 1:
                break
            time.sleep(0.05)
        assert _metric(m, "packserve_requests_total", route="/predict", status=status) == 1
        assert _metric(m, "packserve_requests_total", route="/predict") == 1
        for t in threads:
            t.join(60)
        assert codes == [200, 200]


@pytest.mark.usefixtures("engine")
@pytest.mark.parametrize("chunked", [False, True])
def test_a_large_or_chunked_refused_request_closes(slow_bundle: Path, chunked: bool) -> None:
    """Bodies declared above 64 KiB, or chunked, are not read for a refusal: it closes."""
    with running_server(slow_bundle, *ARGS[:-1]) as srv:
        threads, codes = _busy(srv.url, 2)
        _wait_in_flight(srv.url, 2)
        body = json.dumps({"features": [0.1] * 4}).encode().ljust(70_000)
        framing = (b"transfer-encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
                   if chunked else b"content-length: %d\r\n\r\n%s" % (len(body), body))
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        try:
            sock.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json"
                         b"\r\n" + framing)
            head, _ = _response(sock)
        finally:
            sock.close()
        assert head.startswith(b"HTTP/1.1 503") and b"connection: close" in head.lower()
        for t in threads:
            t.join(60)
        assert codes == [200, 200]


def _response(sock: socket.socket) -> tuple[bytes, bytes]:
    """One whole response from a keep-alive socket, and nothing after it."""
    buf = bytearray()
    head, body = read_response(sock, buf)
    assert not buf, "more than one response"
    return head, body


@pytest.mark.parametrize("batching", [False, True])
def test_deadline_header_gives_504_and_skips_the_work(slow_bundle: Path, batching: bool) -> None:
    args = ("--inference-threads", "1", *(("--batching",) if batching else ()))
    with running_server(slow_bundle, *args) as srv:
        threads, codes = _busy(srv.url, 1)
        _wait_in_flight(srv.url, 1)
        before = _metric(httpx.get(f"{srv.url}/metrics").text, "packserve_inference_rows_count")
        r = httpx.post(f"{srv.url}/predict", json={"features": [0.1] * 4}, timeout=30,
                       headers={"X-Request-Timeout-Ms": "50"})
        assert r.status_code == 504 and r.json()["error"] == "deadline_exceeded", r.text
        for t in threads:
            t.join(60)
        assert codes == [200]
        after = _metric(httpx.get(f"{srv.url}/metrics").text, "packserve_inference_rows_count")
        assert after == before + 1  # the busy request's call only: the expired one never ran
        ok = httpx.post(f"{srv.url}/predict", json={"features": [0.1] * 4},
                        headers={"X-Request-Timeout-Ms": "30000"})
        assert ok.status_code == 200


def test_loop_clock_measures_the_current_pass() -> None:
    async def main() -> tuple[float, float, int, float, int]:
        clock = LoopClock()
        first = clock.elapsed(time.monotonic())
        time.sleep(0.03)  # the rest of this pass is busy
        late = clock.elapsed(time.monotonic())
        count = clock.count
        await asyncio.sleep(0)  # a new pass
        await asyncio.sleep(0)
        fresh = clock.elapsed(time.monotonic())
        return first, late, count, fresh, clock.count

    first, late, count, fresh, fresh_count = asyncio.run(main())
    assert first == 0.0 and late >= 0.03 and count == 2
    assert fresh == 0.0 and fresh_count == 1


class _Batcher:
    """What ``Admission.limit`` reads of a batcher."""

    max_batch_size, max_queue, concurrency, queue_depth = 64, 256, 1, 0


def _handle(one_row_s: float, per_row_s: float, batched: bool) -> ModelHandle:
    cost = CostModel(0.00025)
    cost.fixed_s, cost.per_row_s = one_row_s, per_row_s
    handle = ModelHandle("m", "1", Path("."), None, cost=cost)
    handle.batcher = _Batcher() if batched else None  # type: ignore[assignment]
    return handle


def test_the_default_bound_follows_the_measured_cost() -> None:
    adm = Admission(budget_ms=30, parallelism=2)
    # unbatched, in a thread: the budget's worth of calls over the threads
    assert adm.limit(_handle(0.001, 0.0, batched=False)) == 60  # 30 ms x 2 threads / 1 ms
    assert adm.limit(_handle(0.002, 0.0, batched=False)) == 30
    assert adm.limit(_handle(0.5, 0.0, batched=False)) == 4  # one running + one waiting a thread
    # batched: the cost of a full batch per request; cheap rows -> the budget's worth
    # (1 ms + 64 x 10 us) / 64 = 25.6 us a request -> 30 ms / 25.6 us
    assert adm.limit(_handle(0.001, 0.00001, batched=True)) == 1170
    # ... but never less than a full batch running and one filling: else batches never fill
    assert adm.limit(_handle(0.0015, 0.0007, batched=True)) == 128
    assert Admission(budget_ms=30, max_in_flight=7).limit(_handle(0.5, 0.0, batched=True)) == 7

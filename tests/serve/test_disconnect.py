"""A client that disconnects while its admitted request waits is not computed (issue #15).

Real server, the slow model, one inference thread: a long ``/predict/batch`` occupies the
thread, three clients send a complete ``/predict`` each — admitted, then queued for the
thread (or, with ``--batching``, in the batcher) — and close their connections. Each is
answered 499 in the server's metrics and the model is called for the busy request only
(``packserve_inference_rows_count``, one per computed call); a request sent afterwards is
computed as usual.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from helpers.metrics import sample_sum as _metric
from helpers.models import make_slow_bundle
from helpers.server import running_server

LEAVERS = 3
BODY = b'{"features": [0.1, 0.2, 0.3, 0.4]}'




def _metrics(url: str) -> str:
    return httpx.get(f"{url}/metrics", timeout=10).text


def _wait(url: str, what: str, ok: object, timeout: float = 30.0) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        text = _metrics(url)
        if ok(text):  # type: ignore[operator]
            return text
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def slow_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_slow_bundle(tmp_path_factory.mktemp("gone") / "slow")


def _leaver(port: int) -> socket.socket:
    """A client that sends a whole request (so the server admits and queues it)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                 b"content-length: %d\r\n\r\n%s" % (len(BODY), BODY))
    return sock


@pytest.mark.parametrize("batching", [False, True])
def test_a_client_that_left_while_queued_is_not_computed(slow_bundle: Path, batching: bool) -> None:
    args = ("--inference-threads", "1", "--max-in-flight", "16",
            *(("--batching",) if batching else ()))
    with running_server(slow_bundle, *args) as srv:
        before = _metric(_metrics(srv.url), "packserve_inference_rows_count")
        busy: list[int] = []

        def send_busy() -> None:  # 1000 rows of the slow model: seconds in the only thread
            body = b'{"instances": [%s]}' % b", ".join([BODY] * 1000)
            with httpx.Client(timeout=120) as c:
                busy.append(c.post(f"{srv.url}/predict/batch", content=body,
                                   headers={"content-type": "application/json"}).status_code)

        t = threading.Thread(target=send_busy)
        t.start()
        in_flight = "packserve_requests_in_flight"
        _wait(srv.url, "the busy request", lambda m: _metric(m, in_flight) >= 2)
        socks = [_leaver(srv.port) for _ in range(LEAVERS)]
        _wait(srv.url, "the queued requests", lambda m: _metric(m, in_flight) >= 2 + LEAVERS)
        for s in socks:
            s.close()
        gone = _wait(srv.url, "499 for every client that left",
                     lambda m: _metric(m, "packserve_requests_total", status="499") >= LEAVERS)
        assert _metric(gone, "packserve_inference_rows_count") == before, "computed while queued"
        t.join(120)
        assert busy == [200]
        r = httpx.post(f"{srv.url}/predict", content=BODY, timeout=30,
                       headers={"content-type": "application/json"})
        assert r.status_code == 200
        after = _metric(_metrics(srv.url), "packserve_inference_rows_count")
    # the busy call and the one after it; none of the three whose clients left
    assert after == before + 2

"""The gateway's drain and auth steps on a real ``packserve serve`` process (HTTP over TCP):
``Connection: close`` on every answer once a drain began, and ``--metrics-auth``.

The in-process versions of these live in test_serve_units.py; these check that the real
server (each engine's keep-alive handling, the CLI flags) behaves the same.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from helpers.models import make_slow_bundle
from helpers.server import running_server

ROW = {"features": [0.1, 0.2, 0.3, 0.4]}


def in_flight(url: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "packserve_requests_in_flight":
                return float(s.value)
    return 0.0


@pytest.mark.usefixtures("engine")
def test_drain_closes_keep_alive_connections_on_a_real_server(tmp_path: Path) -> None:
    """A request in flight at SIGTERM is answered 200 with ``Connection: close``; a keep-alive
    client that sends again during the grace period gets 503 + ``Retry-After`` + close; the
    server then exits 0."""
    bundle = make_slow_bundle(tmp_path / "slow", width=1024, layers=24)
    env = {"PACKSERVE_SHUTDOWN_GRACE_S": "3", "PACKSERVE_DRAIN_TIMEOUT_S": "60"}
    with running_server(bundle, env=env) as srv, httpx.Client(timeout=60) as keep, \
            httpx.Client(timeout=60) as slow:
        first = keep.post(f"{srv.url}/predict", json=ROW)  # opens the keep-alive connection
        assert first.status_code == 200 and first.headers.get("connection") != "close"
        out: dict[str, httpx.Response] = {}
        big = {"instances": [ROW] * 512}  # a batch long enough to be running at SIGTERM
        t = threading.Thread(
            target=lambda: out.setdefault("r", slow.post(f"{srv.url}/predict/batch", json=big))
        )
        t.start()
        deadline = time.monotonic() + 30
        while in_flight(srv.url) < 2 and time.monotonic() < deadline:  # the scrape counts itself
            time.sleep(0.01)
        assert "r" not in out, "the batch finished before SIGTERM: make it bigger"
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        refused = keep.post(f"{srv.url}/predict", json=ROW)  # same connection, grace period
        assert refused.status_code == 503, refused.text
        assert refused.headers["connection"] == "close" and "retry-after" in refused.headers
        assert refused.json()["error"] == "shutting_down"
        ready = keep.get(f"{srv.url}/health/ready")  # still listening, not ready, close
        assert ready.status_code == 503 and ready.headers["connection"] == "close"
        t.join(60)
        assert srv.proc.wait(60) == 0
    done = out["r"]
    assert done.status_code == 200 and done.headers["connection"] == "close"
    assert len(done.json()["predictions"]) == 512


def test_metrics_auth_on_a_real_server(chapter_bundle: Path) -> None:
    env = {"PACKSERVE_API_KEY": "s3cret-key"}
    with running_server(chapter_bundle, "--metrics-auth", env=env) as srv:
        assert httpx.get(f"{srv.url}/metrics").status_code == 401
        wrong = httpx.get(f"{srv.url}/metrics", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
        ok = httpx.get(f"{srv.url}/metrics", headers={"authorization": "Bearer s3cret-key"})
        assert ok.status_code == 200 and "packserve_requests_total" in ok.text
        assert httpx.get(f"{srv.url}/metrics", headers={"x-api-key": "s3cret-key"}).status_code == 200
        assert httpx.get(f"{srv.url}/health/ready").status_code == 200  # health stays open
    with running_server(chapter_bundle, env=env) as srv:  # without the flag: open for scrapers
        assert httpx.get(f"{srv.url}/metrics").status_code == 200
        assert httpx.get(f"{srv.url}/models").status_code == 401

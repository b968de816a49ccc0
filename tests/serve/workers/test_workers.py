"""``packserve serve --workers 2``: serves, metrics of the whole server, drain, replacement.

Real supervisor + worker processes on 127.0.0.1 (tests/helpers/server.py starts the CLI);
tests taking the ``engine`` fixture run with workers of both engines.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from helpers.drain import KeepAliveClient
from helpers.models import make_slow_bundle
from helpers.server import free_port, running_server

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

ROW = [0.5] * 15


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of an exposition (0.0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def worker_pids(proc: subprocess.Popen[bytes]) -> list[int]:
    return sorted(c.pid for c in psutil.Process(proc.pid).children())


def per_worker_predicts(folder: Path) -> dict[int, float]:
    """/predict 200 counts straight from each worker's own multiprocess file."""
    out: dict[int, float] = {}
    for f in folder.glob("counter_*.db"):
        pid = int(f.stem.split("_")[1])
        for m in MultiProcessCollector.merge([str(f)], accumulate=True):
            for s in m.samples:
                if (s.name == "packserve_requests_total" and s.labels.get("route") == "/predict"
                        and s.labels.get("status") == "200"):
                    out[pid] = out.get(pid, 0.0) + s.value
    return out


def fresh_connection_predict(url: str) -> int:
    # a new connection each time: the kernel hands each one to whichever worker accepts first
    with httpx.Client() as c:
        return c.post(f"{url}/predict", json={"features": ROW}).status_code


@pytest.mark.usefixtures("engine")
def test_two_workers_serve_and_metrics_count_both(chapter_bundle: Path, tmp_path: Path) -> None:
    folder = tmp_path / "prom"
    with running_server(chapter_bundle, "--workers", "2", "--batching",
                        env={"PROMETHEUS_MULTIPROC_DIR": str(folder)}) as srv:
        pids = worker_pids(srv.proc)
        assert len(pids) == 2
        sent = 0
        with ThreadPoolExecutor(8) as pool:
            for _ in range(10):  # bounded: until both workers answered some (usually round 1)
                codes = list(pool.map(lambda _: fresh_connection_predict(srv.url), range(40)))
                assert codes == [200] * 40
                sent += 40
                counts = per_worker_predicts(folder)
                if all(counts.get(p, 0) > 0 for p in pids):
                    break
        # a request is counted once its answer is sent, so a client can read its answer a moment
        # before the counter moves (granian hands the bytes to Rust first): bounded wait
        deadline = time.monotonic() + 5
        while sum((counts := per_worker_predicts(folder)).values()) < sent:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert all(counts.get(p, 0) > 0 for p in pids), counts
        assert sum(counts.values()) == sent
        # collector-based families (the batcher's) are published once a second: bounded wait
        # (each worker publishes its own snapshot, so wait until 8 scrapes in a row — answered
        # by either worker — agree, not just the first one)
        deadline = time.monotonic() + 15
        agreeing = 0
        while time.monotonic() < deadline and agreeing < 8:
            seen = metric(httpx.get(f"{srv.url}/metrics").text, "packserve_batch_size_requests_sum")
            agreeing = agreeing + 1 if seen == sent else 0
            time.sleep(0.1)
        # every scrape (each on its own connection, so answered by either worker) sees them all
        for _ in range(6):
            text = httpx.get(f"{srv.url}/metrics").text
            assert metric(text, "packserve_requests_total", route="/predict", status="200") == sent
            # _sum is requests (the histogram counts batches: concurrent requests may merge)
            assert metric(text, "packserve_batch_size_requests_sum", model="fraud") == sent
            assert 0 < metric(text, "packserve_batch_size_requests_count", model="fraud") <= sent
            assert metric(text, "packserve_batch_queue_depth", model="fraud") == 0
            from prometheus_client.parser import text_string_to_metric_families

            names = [f.name for f in text_string_to_metric_families(text)]
            assert len(names) == len(set(names)), names  # one family per name: a valid exposition
            assert metric(text, "packserve_workers") == 2
            assert metric(text, "packserve_draining") == 0
            assert metric(text, "packserve_requests_in_flight") >= 1  # this scrape
            ready = [metric(text, "packserve_model_state", pid=str(p), state="ready", model="fraud")
                     for p in pids]
            assert ready == [1.0, 1.0]
            rss = metric(text, "process_resident_memory_bytes")
            own = sum(psutil.Process(p).memory_info().rss for p in pids)
            assert rss >= own * 0.8  # the sum over processes, not one worker's
        code = srv.terminate(30)
        out = srv.output()
    assert code == 0, out[-2000:]
    assert "Traceback" not in out


@pytest.mark.usefixtures("engine")
def test_a_killed_worker_is_replaced_and_its_counts_stay(chapter_bundle: Path) -> None:
    with running_server(chapter_bundle, "--workers", "2", "--batching") as srv:
        for _ in range(20):
            assert fresh_connection_predict(srv.url) == 200
        deadline = time.monotonic() + 10  # both workers published their batcher snapshot
        while time.monotonic() < deadline and metric(
                httpx.get(f"{srv.url}/metrics").text, "packserve_batch_size_requests_count") < 20:
            time.sleep(0.2)
        before = worker_pids(srv.proc)
        victim = before[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the other worker keeps serving meanwhile
            assert fresh_connection_predict(srv.url) == 200
            pids = worker_pids(srv.proc)
            if len(pids) == 2 and victim not in pids:
                text = httpx.get(f"{srv.url}/metrics").text
                new = next(p for p in pids if p not in before)
                if metric(text, "packserve_model_state", pid=str(new), state="ready") == 1.0:
                    break
            time.sleep(0.05)
        else:
            pytest.fail("the killed worker was not replaced")
        text = httpx.get(f"{srv.url}/metrics").text
        assert metric(text, "packserve_requests_total", route="/predict", status="200") >= 20
        assert metric(text, "packserve_batch_size_requests_count", model="fraud") >= 20
        assert f'pid="{victim}"' not in text  # live-only gauges forget the dead worker
        assert "died" in srv.output()
        assert srv.terminate(30) == 0


def test_bad_bundle_stops_every_worker_with_its_exit_code(chapter_bundle: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "packserve.json").write_text("{not json")
    proc = subprocess.run(
        [sys.executable, "-m", "packserve", "serve", str(bad), "--workers", "2",
         "--port", str(free_port())],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 5, proc.stderr
    assert "Traceback" not in proc.stderr and "error:" in proc.stderr


@pytest.mark.usefixtures("engine")
def test_sigterm_drains_every_worker_without_losing_requests(bundles_dir: Path) -> None:
    slow = make_slow_bundle(bundles_dir / "slow-workers", width=1024, layers=24)
    with running_server(slow, "--workers", "2", env={"PACKSERVE_SHUTDOWN_GRACE_S": "1.5"}) as srv:
        stop = threading.Event()
        clients = [KeepAliveClient(srv.port, stop) for _ in range(12)]
        for c in clients:
            c.start()
        time.sleep(0.8)
        in_flight = metric(httpx.get(f"{srv.url}/metrics").text, "packserve_requests_in_flight")
        t_term = time.monotonic()
        for c in clients:
            c.term_at = t_term
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.15)
        for _ in range(2):  # whichever worker answers: not ready any more, still listening
            r = httpx.get(f"{srv.url}/health/ready")
            assert r.status_code == 503 and r.json()["status"] == "draining"
        for c in clients:
            c.join(timeout=60)
        stop.set()
        code = srv.proc.wait(timeout=60)
        elapsed = time.monotonic() - t_term
        out = srv.output()
    statuses = [s for c in clients for s in c.statuses]
    lost = [x for c in clients for x in c.lost]
    assert in_flight >= 2, "the load did not keep requests in flight"
    assert lost == [], lost[:5]
    assert set(statuses) <= {200, 503}
    assert sum(c.ok_after_term for c in clients) >= 1, "requests in flight at SIGTERM were answered"
    assert code == 0, out[-3000:]
    assert out.count("drained: exiting") == 2
    assert elapsed < 30


def test_repository_api_is_refused_with_several_workers(chapter_bundle: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "packserve", "serve", str(chapter_bundle), "--workers", "2",
         "--repository-api", "--api-key", "k", "--port", str(free_port())],
        capture_output=True, text=True, timeout=60,
    )
    # a load/unload call would reach one worker only (ServeSettings refuses the combination)
    assert proc.returncode == 2 and "one worker" in proc.stderr, proc.stderr


def test_a_crash_looping_worker_backs_off_and_never_stops_the_healthy_one(chapter_bundle: Path) -> None:
    """Seven deaths of one worker within seconds (more than MAX_RESTARTS): its restarts back
    off, the other worker keeps serving throughout, and SIGTERM still exits 0."""
    with running_server(chapter_bundle, "--workers", "2") as srv:
        healthy, victim = worker_pids(srv.proc)
        for _ in range(7):
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                assert srv.proc.poll() is None, srv.output()[-2000:]
                assert fresh_connection_predict(srv.url) == 200
                pids = worker_pids(srv.proc)
                assert healthy in pids
                fresh = [p for p in pids if p not in (healthy, victim)]
                if fresh:
                    victim = fresh[0]
                    break
                time.sleep(0.05)
            else:
                pytest.fail("the dead worker was never replaced")
        assert "backing off" in srv.output()
        assert fresh_connection_predict(srv.url) == 200
        assert srv.terminate(30) == 0

"""Ray Serve: a real local Ray cluster (2 CPUs), 2 replicas of create_app, bounded load,
one replica killed mid-load (nothing fails for the client; Ray brings the replica back),
then a bounded queue that answers 503 instead of queueing without limit."""

from __future__ import annotations

import shutil
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from helpers.models import make_slow_bundle
from helpers.server import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ROW = [0.5] * 15


def replicas(driver: int) -> list[psutil.Process]:
    """The Ray Serve replica processes started by this driver's local cluster."""
    out = []
    for p in psutil.Process(driver).children(recursive=True):
        try:
            if p.cmdline()[:1] and p.cmdline()[0].startswith("ray::ServeReplica"):
                out.append(p)
        except psutil.Error:
            continue
    return out


def still_alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Those of ``procs`` that still run (``is_running`` also rules out a reused pid)."""
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            continue
    return out


def describe(procs: list[psutil.Process]) -> list[str]:
    out = []
    for p in procs:
        try:
            out.append(f"{p.pid} {' '.join(p.cmdline())[:80]}")
        except psutil.Error:
            out.append(f"{p.pid} (gone)")
    return out


def wait_for(cond: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(what)


def start_time(text: str) -> float:
    for line in text.splitlines():
        if line.startswith("process_start_time_seconds "):
            return float(line.split()[1])
    raise AssertionError("no process_start_time_seconds")


@pytest.fixture(scope="module")
def repo(chapter_bundle: Path, bundles_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ray") / "repo"
    shutil.copytree(chapter_bundle, root / "fraud" / "1.0.0")
    make_slow_bundle(root / "slow" / "1", width=1024, layers=32)
    return root


def test_ray_replicas_survive_a_killed_replica_and_bound_the_queue(repo: Path, launch: Any) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "packserve", "deploy", "ray", str(repo), "--replicas", "2",
           "--num-cpus", "2", "--port", str(port), "--max-ongoing-requests", "4",
           "--max-queued-requests", "4"]
    url = f"http://127.0.0.1:{port}"
    with launch(cmd, {}, url=url, ready_path="/health/ready",
                timeout=120) as srv:
        driver = srv.proc.pid
        first = wait_for(lambda: (r := replicas(driver)) and len(r) == 2 and r, 60, "2 replicas")
        expected = httpx.post(f"{url}/models/fraud/predict", json={"features": ROW}).json()

        # --- bounded load; one replica SIGKILLed once a third of it is done -------------------
        total, done, retried = 240, [0], [0]
        lock = threading.Lock()
        victim = first[0]

        def one(i: int) -> tuple[int, Any]:
            for attempt in range(4):  # a client with retries, as behind any load balancer
                try:
                    r = httpx.post(f"{url}/models/fraud/predict", json={"features": ROW}, timeout=30)
                    if r.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                with lock:
                    retried[0] += 1
                time.sleep(0.2 * (attempt + 1))
            with lock:
                done[0] += 1
                if done[0] == total // 3:
                    victim.send_signal(signal.SIGKILL)
            return r.status_code, r.json()

        t0 = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(one, range(total)))
        load_s = time.monotonic() - t0
        statuses = [s for s, _ in results]
        assert statuses == [200] * total, {s: statuses.count(s) for s in set(statuses)}
        assert all(body == expected for _, body in results)
        assert not victim.is_running() or victim.status() == psutil.STATUS_ZOMBIE

        # --- Ray brings the replica back, and it serves ---------------------------------------
        now = wait_for(lambda: (r := replicas(driver)) and len(r) == 2 and victim.pid not in
                       [p.pid for p in r] and r, 90, "replica replaced")
        newest = max(p.create_time() for p in now)
        seen: set[float] = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(t >= newest - 1 for t in seen):
            r = httpx.get(f"{url}/metrics")
            if r.status_code == 200:
                seen.add(start_time(r.text))
            time.sleep(0.05)
        assert any(t >= newest - 1 for t in seen), "the new replica never answered"

        # --- bounded queue: a burst far above 2 x (4 ongoing) + 4 queued gets fast 503s -----
        slow_row = {"features": [0.1, 0.2, 0.3, 0.4]}

        def slow(_: int) -> int:
            return httpx.post(f"{url}/models/slow/predict", json=slow_row, timeout=60).status_code

        with ThreadPoolExecutor(40) as pool:
            burst = list(pool.map(slow, range(40)))
        assert set(burst) <= {200, 503}, burst
        assert burst.count(503) >= 1 and burst.count(200) >= 8, burst
        assert httpx.post(f"{url}/models/fraud/predict", json={"features": ROW}).status_code == 200
        print(f"load {total} req in {load_s:.1f}s, retried {retried[0]}, burst 503s {burst.count(503)}")
        # Everything the deployment runs, recorded while the driver is alive: once it exits its
        # children are re-parented, so they can no longer be found through it.
        tree = [psutil.Process(driver), *psutil.Process(driver).children(recursive=True)]
        assert {p.pid for p in replicas(driver)} <= {p.pid for p in tree}
        assert len(replicas(driver)) == 2
    assert srv.proc.returncode == 0
    # The driver, its replicas and every Ray process it started are gone (no orphan keeps
    # serving or holding the port); Ray may need a moment to reap the last of them.
    leftover = still_alive(tree)
    deadline = time.monotonic() + 30
    while leftover and time.monotonic() < deadline:
        time.sleep(0.2)
        leftover = still_alive(tree)
    assert not leftover, describe(leftover)

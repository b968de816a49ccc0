"""Versions and hot reload under load, against a real server: the repository extension."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from helpers.metrics import sample as _metric
from helpers.models import make_slow_bundle
from helpers.reload import ROW, V2Traffic
from helpers.reload import place as _place
from helpers.server import running_server

KEY = "reload-key"
AUTH = {"X-API-Key": KEY}
ENV = {"PACKSERVE_API_KEY": KEY}


def test_hot_reload_under_load(tmp_path: Path, chapter_bundle: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "fraud").mkdir(parents=True)
    _place(chapter_bundle, repo / "fraud" / "1")
    with running_server(repo, "--repository-api", env=ENV) as srv, httpx.Client(
        base_url=srv.url, headers=AUTH, timeout=60
    ) as c:
        with V2Traffic(srv.url, AUTH) as gen:
            gen.wait_for(50)
            _place(chapter_bundle, repo / "fraud" / "2")
            r = c.post("/v2/repository/models/fraud/load")
            assert r.status_code == 200, r.text
            assert r.json() == {"name": "fraud", "loaded": ["2"], "serving": "2"}
            gen.wait_for(50)
            _place(chapter_bundle, repo / "fraud" / "3", corrupt=True)
            r = c.post("/v2/repository/models/fraud/load")
            assert r.status_code == 400
            err = r.json()["error"]
            assert "version 3" in err and "sha256" in err and "version 2 keeps serving" in err
            gen.wait_for(50)

        assert not gen.errors, gen.errors[:5]
        samples = gen.samples
        assert all(s.status == 200 for s in samples)
        v1 = [s for s in samples if s.version == "1"]
        v2 = [s for s in samples if s.version == "2"]
        assert len(v1) >= 50 and len(v2) >= 100 and len(v1) + len(v2) == len(samples)
        # One switch point: once any client has seen version 2, no later request got version 1.
        assert max(s.sent for s in v1) < min(s.received for s in v2)

        index = c.post("/v2/repository/index").json()
        assert [(e["name"], e["version"], e["state"]) for e in index] == [
            ("fraud", "1", "READY"), ("fraud", "2", "READY"), ("fraud", "3", "UNAVAILABLE")]
        assert "sha256" in index[2]["reason"]
        assert c.post("/v2/repository/index", json={"ready": True}).json()[-1]["version"] == "2"
        assert c.get("/v2/models/fraud").json()["versions"] == ["1", "2"]
        metrics = c.get("/metrics").text
        assert 'packserve_model_state{model="fraud",state="failed",version="3"} 1.0' in metrics
        assert 'packserve_model_loads_total{model="fraud",result="failed"} 1.0' in metrics
        assert 'packserve_model_loads_total{model="fraud",result="loaded"} 1.0' in metrics
        assert c.get("/v2/health/ready").status_code == 200  # a failed hot load is not an outage

        # the corrupt version is fixed on disk: an explicit load retries it
        shutil.rmtree(repo / "fraud" / "3")
        _place(chapter_bundle, repo / "fraud" / "3")
        r = c.post("/v2/repository/models/fraud/load")
        assert r.status_code == 200 and r.json()["serving"] == "3", r.text
        assert c.post("/v2/models/fraud/infer", content=gen.body).json()["model_version"] == "3"


def _wait_in_flight(c: httpx.Client, n: int, timeout: float = 20.0) -> None:
    """Until the server has ``n`` requests in flight besides the metrics request asking."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for line in c.get("/metrics").text.splitlines():
            if line.startswith("packserve_requests_in_flight ") and float(line.split()[1]) >= n + 1:
                return
        time.sleep(0.005)
    raise AssertionError(f"{n} requests never were in flight at once")


def test_unload_waits_for_in_flight_work(tmp_path: Path, chapter_bundle: Path) -> None:
    repo = tmp_path / "repo"
    make_slow_bundle(repo / "slow" / "1")
    (repo / "fraud").mkdir()
    _place(chapter_bundle, repo / "fraud" / "1")
    # 256 rows of the slow model: ~0.3 s per request on one core, so three overlap surely
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [256, 4],
                                   "data": [0.1] * 1024}]}).encode()
    results: list[httpx.Response] = []

    with running_server(repo, "--repository-api", env=ENV) as srv, httpx.Client(
        base_url=srv.url, headers=AUTH, timeout=60
    ) as c:
        assert c.post("/v2/models/slow/infer", content=body).status_code == 200

        def send() -> None:
            with httpx.Client(base_url=srv.url, headers=AUTH, timeout=60) as cc:
                results.append(cc.post("/v2/models/slow/infer", content=body))

        senders = [threading.Thread(target=send) for _ in range(3)]
        for t in senders:
            t.start()
        _wait_in_flight(c, 3)
        r = c.post("/v2/repository/models/slow/unload")
        for t in senders:
            t.join(timeout=60)
        assert r.status_code == 200 and r.json() == {"name": "slow", "unloaded": ["1"]}
        assert [x.status_code for x in results] == [200, 200, 200], [x.text for x in results]
        assert c.post("/v2/models/slow/infer", content=body).status_code == 404
        assert c.get("/v2/models/slow/ready").status_code == 404
        # the other model is untouched; reloading brings the unloaded one back
        assert c.get("/v2/models/fraud/ready").status_code == 200
        assert c.post("/v2/repository/models/slow/load").json()["serving"] == "1"
        assert c.post("/v2/models/slow/infer", content=body).status_code == 200


def test_poller_loads_new_versions(tmp_path: Path, chapter_bundle: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "fraud").mkdir(parents=True)
    _place(chapter_bundle, repo / "fraud" / "1")
    with running_server(repo, "--repository-poll-s", "0.1") as srv:
        _place(chapter_bundle, repo / "fraud" / "2", corrupt=True)
        _place(chapter_bundle, repo / "fraud" / "10")
        end = time.monotonic() + 20
        versions: list[str] = []
        while time.monotonic() < end:
            versions = httpx.get(f"{srv.url}/v2/models/fraud").json()["versions"]
            if "10" in versions:
                break
            time.sleep(0.05)
        assert versions == ["1", "10"]
        body = json.dumps({"inputs": [
            {"name": "input", "datatype": "FP32", "shape": [1, 15], "data": ROW}]}).encode()
        r = httpx.post(f"{srv.url}/v2/models/fraud/infer", content=body)
        assert r.json()["model_version"] == "10"  # numeric order: 10 > 2 > 1
        # the repository API is off here: only polling changes versions
        assert httpx.post(f"{srv.url}/v2/repository/index").status_code == 404


def test_repository_api_needs_an_api_key(chapter_bundle: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PACKSERVE_API_KEY"}
    proc = subprocess.run(
        [sys.executable, "-m", "packserve", "serve", str(chapter_bundle), "--repository-api"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert proc.returncode == 2  # ConfigError, before anything listens
    assert "API key" in proc.stderr + proc.stdout


def test_repository_calls_need_the_key(tmp_path: Path, chapter_bundle: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "fraud").mkdir(parents=True)
    _place(chapter_bundle, repo / "fraud" / "1")
    with running_server(repo, "--repository-api", env=ENV) as srv:
        for path in ("/v2/repository/index", "/v2/repository/models/fraud/load",
                     "/v2/repository/models/fraud/unload"):
            r = httpx.post(f"{srv.url}{path}")
            assert r.status_code == 401 and list(r.json()) == ["error"]
        assert httpx.get(f"{srv.url}/v2", headers=AUTH).json()["extensions"] == [
            "binary_tensor_data", "model_repository"]
        r = httpx.post(f"{srv.url}/v2/repository/models/ghost/load", headers=AUTH)
        assert r.status_code == 404 and "ghost" in r.json()["error"]
        r = httpx.post(f"{srv.url}/v2/repository/models/fraud/load", headers=AUTH,
                       json={"parameters": {"config": "{}"}})
        assert r.status_code == 400 and "not supported" in r.json()["error"]




def test_v2_goes_through_the_batcher_also_after_a_hot_load(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_slow_bundle(repo / "slow" / "1")
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [16, 4],
                                   "data": [0.1] * 64}]}).encode()

    def burst(url: str, n: int = 6) -> list[int]:
        codes: list[int] = []
        barrier = threading.Barrier(n)

        def send() -> None:
            with httpx.Client(headers=AUTH, timeout=60) as cc:
                barrier.wait()
                codes.append(cc.post(f"{url}/v2/models/slow/infer", content=body).status_code)

        threads = [threading.Thread(target=send) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        return codes

    with running_server(repo, "--repository-api", "--batching", env=ENV) as srv, httpx.Client(
        base_url=srv.url, headers=AUTH, timeout=60
    ) as c:
        assert burst(srv.url) == [200] * 6
        m = c.get("/metrics").text
        labels = {"model": "slow", "version": "1"}
        assert _metric(m, "packserve_batch_size_requests_sum", **labels) == 6  # all via the batcher
        assert _metric(m, "packserve_batch_size_requests_count", **labels) < 6  # some merged
        make_slow_bundle(repo / "slow" / "2")
        assert c.post("/v2/repository/models/slow/load").json()["serving"] == "2"
        assert burst(srv.url) == [200] * 6
        m = c.get("/metrics").text
        assert _metric(m, "packserve_batch_size_requests_sum", model="slow", version="2") == 6


def test_tritonclient_repository_calls(tmp_path: Path, chapter_bundle: Path) -> None:
    import numpy as np
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    repo = tmp_path / "repo"
    (repo / "fraud").mkdir(parents=True)
    _place(chapter_bundle, repo / "fraud" / "1")
    with running_server(repo, "--repository-api", env=ENV) as srv:
        client = httpclient.InferenceServerClient(srv.url.removeprefix("http://"))
        try:
            assert client.get_model_repository_index(headers=dict(AUTH)) == [
                {"name": "fraud", "version": "1", "state": "READY", "reason": ""}]
            _place(chapter_bundle, repo / "fraud" / "2")
            client.load_model("fraud", headers=dict(AUTH))
            assert client.get_model_metadata("fraud", headers=dict(AUTH))["versions"] == ["1", "2"]
            x = httpclient.InferInput("input", [1, 15], "FP32")
            x.set_data_from_numpy(np.zeros((1, 15), np.float32))
            assert client.infer("fraud", [x], headers=dict(AUTH)).get_response()["model_version"] == "2"
            _place(chapter_bundle, repo / "fraud" / "3", corrupt=True)
            with pytest.raises(InferenceServerException) as info:
                client.load_model("fraud", headers=dict(AUTH))
            assert info.value.status() == "400" and "version 2 keeps serving" in info.value.message()
            client.unload_model("fraud", headers=dict(AUTH))
            assert not client.is_model_ready("fraud", headers=dict(AUTH))
            with pytest.raises(InferenceServerException) as info:
                client.load_model("fraud", headers={})
            assert info.value.status() == "401"
        finally:
            client.close()


def test_v2_request_queued_for_a_batch_is_dropped_when_its_client_leaves(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_slow_bundle(repo / "slow" / "1")

    def body(rows: int) -> bytes:
        return json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [rows, 4],
                                       "data": [0.1] * (4 * rows)}]}).encode()

    with running_server(repo, "--batching", env=ENV) as srv, httpx.Client(
        base_url=srv.url, headers=AUTH, timeout=60
    ) as c:
        long: list[int] = []
        t = threading.Thread(target=lambda: long.append(
            c.post("/v2/models/slow/infer", content=body(512)).status_code))
        t.start()
        _wait_in_flight(c, 1)  # the model is busy with the long request (~0.6 s)
        with httpx.Client(base_url=srv.url, headers=AUTH, timeout=0.15) as impatient, \
                pytest.raises(httpx.ReadTimeout):
            impatient.post("/v2/models/slow/infer", content=body(1))
        t.join(60)
        assert long == [200]
        end = time.monotonic() + 10
        while time.monotonic() < end:
            m = c.get("/metrics").text
            if _metric(m, "packserve_batch_cancelled_total", model="slow", version="1") == 1:
                break
            time.sleep(0.05)
        assert _metric(m, "packserve_batch_cancelled_total", model="slow", version="1") == 1


def test_timeout_parameter_is_the_request_deadline(tmp_path: Path) -> None:
    """Triton's ``parameters.timeout`` (µs): a request still queued when it passes gets 504."""
    repo = tmp_path / "repo"
    make_slow_bundle(repo / "slow" / "1")

    def body(rows: int, **params: int) -> bytes:
        doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [rows, 4],
                           "data": [0.1] * (4 * rows)}]}
        if params:
            doc["parameters"] = params
        return json.dumps(doc).encode()

    with running_server(repo, "--batching", env=ENV) as srv, httpx.Client(
        base_url=srv.url, headers=AUTH, timeout=60
    ) as c:
        long: list[int] = []
        t = threading.Thread(target=lambda: long.append(
            c.post("/v2/models/slow/infer", content=body(512)).status_code))
        t.start()
        _wait_in_flight(c, 1)
        r = httpx.post(f"{srv.url}/v2/models/slow/infer", content=body(1, timeout=50_000),
                       headers=AUTH, timeout=30)
        t.join(60)
        assert long == [200]
        assert r.status_code == 504 and list(r.json()) == ["error"], r.text
        ok = c.post("/v2/models/slow/infer", content=body(1, timeout=30_000_000))
        assert ok.status_code == 200

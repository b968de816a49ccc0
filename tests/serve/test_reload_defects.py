"""Hot-reload defects found under load (issue #15), each against a real server.

* a version folder whose manifest arrived before its artifact (a slow copy) is served once
  the copy finished, without touching the manifest again;
* ``load`` after ``unload`` serves the newest version from its first answer;
* a request routed before an unload (its body still arriving) finishes on its version;
* ``--keep-versions N`` keeps the N newest ready versions loaded and retires older ones.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from pathlib import Path

import httpx

from helpers.metrics import sample as _metric
from helpers.reload import V2Traffic
from helpers.reload import place as _place
from helpers.server import running_server

KEY = "reload-key"
AUTH = {"X-API-Key": KEY}
ENV = {"PACKSERVE_API_KEY": KEY}
ROW = [0.25] * 15
V2_BODY = json.dumps(
    {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 15], "data": ROW}]}
).encode()


def _gauge(text: str, name: str) -> float:
    return next((float(line.split()[1]) for line in text.splitlines()
                 if line.startswith(f"{name} ")), 0.0)


def _until(pred: object, timeout: float, what: str) -> None:
    assert callable(pred)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_slow_copied_version_is_served_once_its_files_arrive(tmp_path: Path, chapter_bundle: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "fraud").mkdir(parents=True)
    _place(chapter_bundle, repo / "fraud" / "1")
    with running_server(repo, "--repository-poll-s", "0.1") as srv, httpx.Client(
        base_url=srv.url, timeout=30
    ) as c:
        dest = repo / "fraud" / "2"
        dest.mkdir()
        shutil.copy2(chapter_bundle / "packserve.json", dest / "packserve.json")  # manifest first
        _until(lambda: _metric(c.get("/metrics").text, "packserve_model_loads_total",
                               model="fraud", result="failed") >= 1, 20, "the poller to try v2")
        # the rest of the copy arrives slowly, in chunks, after the failed attempt
        for f in sorted(chapter_bundle.iterdir()):
            if f.name == "packserve.json":
                continue
            data = f.read_bytes()
            with (dest / f.name).open("wb") as fh:
                for i in range(4):
                    fh.write(data[i * len(data) // 4:(i + 1) * len(data) // 4])
                    fh.flush()
                    time.sleep(0.12)

        def serves_v2() -> bool:
            r = c.post("/v2/models/fraud/infer", content=V2_BODY)
            return r.status_code == 200 and r.json()["model_version"] == "2"

        _until(serves_v2, 20, "version 2 to serve after its copy finished")
        assert c.get("/v2/models/fraud").json()["versions"] == ["1", "2"]


def test_load_after_unload_serves_the_newest_version_first(tmp_path: Path, chapter_bundle: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "fraud").mkdir(parents=True)
    for v in ("1", "2", "3", "4"):
        _place(chapter_bundle, repo / "fraud" / v)
    with running_server(repo, "--repository-api", "--keep-versions", "0", env=ENV) as srv, \
            httpx.Client(base_url=srv.url, headers=AUTH, timeout=60) as c, V2Traffic(srv.url, AUTH) as gen:
        _until(lambda: gen.ok() >= 20, 20, "traffic")
        for _ in range(2):
            assert c.post("/v2/repository/models/fraud/unload").status_code == 200
            r = c.post("/v2/repository/models/fraud/load")
            assert r.status_code == 200 and r.json()["serving"] == "4", r.text
            before = gen.ok()
            _until(lambda b=before: gen.ok() >= b + 20, 20, "traffic after the load")  # type: ignore[misc]
    served = {s.version for s in gen.samples if s.status == 200}
    assert served == {"4"}, sorted(s.version or "" for s in gen.samples
                                   if s.status == 200 and s.version != "4")[:10]
    assert {s.status for s in gen.samples} <= {200, 404}  # 404 only while unloaded


def _send_raw(port: int, head: bytes, body: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(head + body)
    return sock


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, rest


def test_request_routed_before_an_unload_finishes_on_its_version(
    tmp_path: Path, chapter_bundle: Path
) -> None:
    repo = tmp_path / "repo"
    (repo / "fraud").mkdir(parents=True)
    _place(chapter_bundle, repo / "fraud" / "1")
    body = json.dumps({"features": ROW}).encode()
    head = (f"POST /models/fraud/predict HTTP/1.1\r\nhost: x\r\nx-api-key: {KEY}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n").encode()
    with running_server(repo, "--repository-api", env=ENV) as srv, httpx.Client(
        base_url=srv.url, headers=AUTH, timeout=60
    ) as c:
        sock = _send_raw(srv.port, head, body[:10])  # routed; the body is still arriving
        try:
            _until(lambda: _gauge(c.get("/metrics").text, "packserve_requests_in_flight") >= 2, 20,
                   "the request in flight")  # it and the metrics request asking
            unloaded: list[httpx.Response] = []
            t = threading.Thread(target=lambda: unloaded.append(
                c.post("/v2/repository/models/fraud/unload")))
            t.start()
            _until(lambda: any(e["state"] == "UNLOADING" for e in c.post(
                "/v2/repository/index").json()), 10, "the unload to wait for the routed request")
            sock.sendall(body[10:])
            status, answer = _read_response(sock)
        finally:
            sock.close()
        t.join(30)
        assert status == 200, answer
        assert json.loads(answer)["model_version"] == "1"
        assert unloaded[0].status_code == 200 and unloaded[0].json()["unloaded"] == ["1"]
        assert c.post("/models/fraud/predict", json={"features": ROW}).status_code == 404


def test_keep_versions_retires_old_versions(tmp_path: Path, chapter_bundle: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "fraud").mkdir(parents=True)
    for v in ("1", "2", "3"):
        _place(chapter_bundle, repo / "fraud" / v)
    with running_server(repo, "--repository-api", "--keep-versions", "2", env=ENV) as srv, \
            httpx.Client(base_url=srv.url, headers=AUTH, timeout=60) as c:
        assert c.get("/v2/models/fraud").json()["versions"] == ["2", "3"]  # 1 never loaded
        index = {e["version"]: e for e in c.post("/v2/repository/index").json()}
        assert index["1"]["state"] == "UNAVAILABLE" and "superseded" in index["1"]["reason"]
        _place(chapter_bundle, repo / "fraud" / "4")
        r = c.post("/v2/repository/models/fraud/load")
        assert r.status_code == 200 and r.json() == {"name": "fraud", "loaded": ["4"], "serving": "4"}
        _until(lambda: c.get("/v2/models/fraud").json()["versions"] == ["3", "4"], 10,
               "version 2 to be retired")
        r = c.post("/models/fraud/versions/2/predict", json={"features": ROW})
        assert r.status_code == 404
        m = c.get("/metrics").text
        assert _metric(m, "packserve_model_state", model="fraud", version="2", state="unloaded") == 1
        assert _metric(m, "packserve_model_state", model="fraud", version="4", state="ready") == 1

"""Batching through a real uvicorn server on 127.0.0.1, talked to over HTTP.

Most tests run the server in-process (a uvicorn thread) so they can *gate* the model: the
predictor's ``run`` blocks until the test opens the gate, which makes "the model is busy,
requests queue up" deterministic without sleeping. ``inline_max_ms=0`` keeps every model
call in the batcher's thread (a gated call on the event loop would freeze the server). One
test drives a real ``packserve serve`` subprocess through SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn

from helpers.models import make_slow_bundle
from helpers.server import free_port, running_server
from packserve.runtime import load
from packserve.serve.app import create_app
from packserve.serve.batching import Batcher
from packserve.serve.engines.uvicorn import PackserveServer
from packserve.serve.settings import ServeSettings

pytestmark = pytest.mark.timeout(120)

POISON = 12345.0  # a feature-0 value that makes the gated model raise


def f32(v: float) -> float:
    """How a feature value looks inside the model's float32 feeds."""
    return float(np.float32(v))


class _ThreadServer(PackserveServer):
    """PackserveServer without signal handlers (they need the main thread)."""

    loop: asyncio.AbstractEventLoop

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def serve(self, sockets: Any = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)


class Gate:
    """Wraps the served predictor: records each call's feature-0 values; blocks while closed."""

    def __init__(self, predictor: Any) -> None:
        self.open = threading.Event()
        self.started = threading.Event()
        self.calls: list[list[float]] = []
        self._run = predictor.run
        predictor.run = self.run

    def run(self, feeds: dict[str, np.ndarray]) -> Any:
        first = next(iter(feeds.values()))
        col = [float(v) for v in first[:, 0]]
        self.calls.append(col)
        self.started.set()
        assert self.open.wait(30), "gate never opened"
        if POISON in col:
            raise RuntimeError("/srv/models/fraud/model.onnx: simulated runtime failure")
        return self._run(feeds)


class InProcess:
    def __init__(self, bundle: Path, **overrides: Any) -> None:
        kw: dict[str, Any] = dict(
            model_path=bundle, host="127.0.0.1", port=free_port(), batching=True,
            inline_max_ms=0.0, log_level="warning", shutdown_grace_s=0.1, drain_timeout_s=10.0,
        )
        kw.update(overrides)
        self.settings = ServeSettings(**kw)
        self.app = create_app(self.settings)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.settings.port,
                                lifespan="on", log_level="warning", access_log=False)
        self.server = _ThreadServer(config, self.settings, self.app.state.serving)
        self.url = f"http://127.0.0.1:{self.settings.port}"
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                    break
            time.sleep(0.02)
        else:
            raise RuntimeError("in-process server not ready")

    @property
    def handle(self) -> Any:
        return self.app.state.registry.resolve(None)

    @property
    def batcher(self) -> Batcher:
        b = self.handle.batcher
        assert isinstance(b, Batcher)
        return b

    def gate(self) -> Gate:
        return Gate(self.handle.predictor)

    def sigterm(self) -> None:
        self.server.loop.call_soon_threadsafe(self.server._on_signal, signal.SIGTERM)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@contextlib.contextmanager
def serving(bundle: Path, **overrides: Any) -> Iterator[InProcess]:
    srv = InProcess(bundle, **overrides)
    try:
        yield srv
    finally:
        with contextlib.suppress(Exception):
            srv.handle.predictor.run = srv.handle.predictor.__class__.run.__get__(srv.handle.predictor)
        srv.stop()


def wait_for(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def post(client: httpx.Client, url: str, row: list[float]) -> httpx.Response:
    return client.post(f"{url}/predict", json={"features": row})


@pytest.fixture(scope="module")
def reference(chapter_bundle: Path) -> Any:
    return load(chapter_bundle)


def expected_records(reference: Any, rows: np.ndarray) -> list[dict[str, Any]]:
    """Unbatched answers, one call per row."""
    return [reference.predict(r[None, :]).to_records()[0] for r in rows]


def assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got["prediction"] == want["prediction"]
    assert got["probability"] == pytest.approx(want["probability"], rel=1e-5, abs=1e-6)


# --- merging ---------------------------------------------------------------------------------


def test_concurrent_requests_are_merged_and_answered_row_by_row(chapter_bundle, chapter_data, reference):
    x = chapter_data.x_test[:40]
    with serving(chapter_bundle) as srv:
        gate = srv.gate()
        results: dict[int, httpx.Response] = {}

        def send(i: int) -> None:
            with httpx.Client(timeout=30) as c:
                if i == 38:  # one /predict/batch request with two rows joins the merge
                    results[i] = c.post(f"{srv.url}/predict/batch", json={
                        "instances": [{"features": list(x[38])}, {"features": list(x[39])}]})
                else:
                    results[i] = post(c, srv.url, list(x[i]))

        first = threading.Thread(target=send, args=(0,))
        first.start()
        assert gate.started.wait(10)
        threads = [threading.Thread(target=send, args=(i,)) for i in range(1, 39)]
        for t in threads:
            t.start()
        wait_for(lambda: srv.batcher.queue_depth == 38)
        gate.open.set()
        for t in [first, *threads]:
            t.join(30)
        assert len(gate.calls) == 2  # 39 HTTP requests, 40 rows, 2 model calls
        assert sorted(len(c) for c in gate.calls) == [1, 39]
    want = expected_records(reference, x)
    for i in range(38):
        assert results[i].status_code == 200, results[i].text
        assert_same(results[i].json(), want[i])
    batch = results[38].json()
    assert results[38].status_code == 200
    recs = batch["predictions"] if isinstance(batch, dict) else batch
    assert len(recs) == 2
    assert_same(recs[0], want[38])
    assert_same(recs[1], want[39])


def test_real_concurrency_without_gate_every_caller_gets_its_own_rows(
    chapter_bundle, chapter_data, reference
):
    x = chapter_data.x_test[:64]
    want = expected_records(reference, x)
    with serving(chapter_bundle, inline_max_ms=0.25, max_wait_ms=2.0) as srv:

        async def main() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64)) as c:
                return await asyncio.gather(*(
                    c.post(f"{srv.url}/predict", json={"features": list(r)}) for r in x))

        responses = asyncio.run(main())
        stats = srv.batcher.stats
    for r, w in zip(responses, want, strict=True):
        assert r.status_code == 200
        assert_same(r.json(), w)
    assert stats.rows == 64 and stats.completed == 64  # every row accounted, exactly once
    # 64 concurrent callers on one model: some must have shared a call (the inline fast path
    # takes only a request alone in its loop turn; the rest queue behind the running batch)
    assert stats.batches < 64 and stats.max_batch_rows >= 2, stats


def test_idle_request_is_not_held_for_max_wait(chapter_bundle, chapter_data):
    x = chapter_data.x_test
    with serving(chapter_bundle, max_wait_ms=60_000.0, inline_max_ms=0.25) as srv, \
            httpx.Client(timeout=30) as c:
        for i in range(5):  # sequential: each arrives at an idle model
            t0 = time.monotonic()
            assert post(c, srv.url, list(x[i])).status_code == 200
            assert time.monotonic() - t0 < 10.0  # structurally far below max_wait (60 s)


# --- overload, deadlines, disconnects --------------------------------------------------------


def test_full_queue_answers_503_with_retry_after_at_once(chapter_bundle, chapter_data):
    x = chapter_data.x_test
    with serving(chapter_bundle, max_queue=2) as srv:
        gate = srv.gate()
        out: list[httpx.Response] = []
        send = lambda i: out.append(post(httpx.Client(timeout=30), srv.url, list(x[i])))  # noqa: E731
        threads = [threading.Thread(target=send, args=(0,))]
        threads[0].start()
        assert gate.started.wait(10)
        threads += [threading.Thread(target=send, args=(i,)) for i in (1, 2)]
        for t in threads[1:]:
            t.start()
        wait_for(lambda: srv.batcher.queue_depth == 2)
        with httpx.Client(timeout=30) as c:
            r = post(c, srv.url, list(x[3]))
        assert r.status_code == 503
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"] == "overloaded"
        assert not gate.open.is_set()  # answered at once: the model was still blocked
        gate.open.set()
        for t in threads:
            t.join(30)
        assert [o.status_code for o in out] == [200, 200, 200]
        metrics = httpx.get(f"{srv.url}/metrics").text
    # refused at the door (admission control), before its body was parsed
    assert 'packserve_admission_rejected_total{model="fraud",reason="queue_full"} 1.0' in metrics
    # every answered request - the blocked one and the two queued behind it - is timed
    assert 'packserve_batch_request_seconds_count{model="fraud",version="1.0.0"} 3.0' in metrics


def test_deadline_passing_in_queue_is_504_and_not_computed(chapter_bundle, chapter_data):
    x = chapter_data.x_test
    with serving(chapter_bundle, timeout_ms=300.0) as srv:
        gate = srv.gate()
        first: list[httpx.Response] = []
        t = threading.Thread(target=lambda: first.append(post(httpx.Client(timeout=30), srv.url, list(x[0]))))
        t.start()
        assert gate.started.wait(10)
        with httpx.Client(timeout=30) as c:
            r = post(c, srv.url, list(x[1]))
        assert r.status_code == 504
        assert r.json()["error"] == "deadline_exceeded"
        assert not gate.open.is_set()  # answered while the model was still busy
        gate.open.set()
        t.join(30)
        assert first[0].status_code == 200
        assert srv.batcher.stats.expired == 1
    assert gate.calls == [[f32(x[0][0])]]  # the expired request never reached the model


def test_client_disconnect_drops_the_request_from_its_batch(chapter_bundle, chapter_data):
    x = chapter_data.x_test
    with serving(chapter_bundle) as srv:
        gate = srv.gate()
        first: list[httpx.Response] = []
        t = threading.Thread(target=lambda: first.append(post(httpx.Client(timeout=30), srv.url, list(x[0]))))
        t.start()
        assert gate.started.wait(10)
        with httpx.Client(timeout=0.3) as c, pytest.raises(httpx.ReadTimeout):
            post(c, srv.url, list(x[1]))  # the client gives up and closes the connection
        wait_for(lambda: srv.batcher.stats.cancelled == 1)
        assert srv.batcher.queue_depth == 0
        with httpx.Client(timeout=30) as c:
            later = threading.Thread(target=lambda: first.append(post(c, srv.url, list(x[2]))))
            later.start()
            wait_for(lambda: srv.batcher.queue_depth == 1)
            gate.open.set()
            t.join(30)
            later.join(30)
        assert [r.status_code for r in first] == [200, 200]
    assert gate.calls == [[f32(x[0][0])], [f32(x[2][0])]]


# --- isolation -------------------------------------------------------------------------------


def test_bad_input_and_failing_batch_fail_only_themselves(chapter_bundle, chapter_data):
    x = chapter_data.x_test
    poison = list(x[1])
    poison[0] = POISON
    with serving(chapter_bundle) as srv:
        gate = srv.gate()
        out: dict[str, httpx.Response] = {}

        def send(key: str, row: Any) -> None:
            with httpx.Client(timeout=30) as c:
                out[key] = c.post(f"{srv.url}/predict", json={"features": row})

        a = threading.Thread(target=send, args=("a", list(x[0])))
        a.start()
        assert gate.started.wait(10)
        queued = [threading.Thread(target=send, args=k) for k in (("poison", poison), ("c", list(x[2])))]
        for t in queued:
            t.start()
        wait_for(lambda: srv.batcher.queue_depth == 2)
        send("bad", [*x[3][:14], "not a number"])  # refused by validation, never queued
        gate.open.set()
        for t in [a, *queued]:
            t.join(30)
        send("after", list(x[4]))
    assert out["bad"].status_code == 422
    assert out["a"].status_code == 200 and out["after"].status_code == 200
    for key in ("poison", "c"):  # the batch that hit the failure, and only it
        r = out[key]
        assert r.status_code == 500
        assert r.json()["error"] == "inference_failed"
        assert "/srv" not in r.text and "Traceback" not in r.text
    assert len(gate.calls) == 3


# --- drain -----------------------------------------------------------------------------------


def test_drain_completes_queued_requests_and_refuses_new(chapter_bundle, chapter_data):
    x = chapter_data.x_test
    # a grace period long enough for the refused request below to reach a listening socket
    # on a busy machine (at 0.1 s it sometimes met a closed one: connection refused)
    srv = InProcess(chapter_bundle, max_batch_size=2, shutdown_grace_s=2.0)
    try:
        gate = srv.gate()
        out: dict[int, httpx.Response] = {}

        def send(i: int) -> None:
            with httpx.Client(timeout=30) as c:
                out[i] = post(c, srv.url, list(x[i]))

        threads = [threading.Thread(target=send, args=(0,))]
        threads[0].start()
        assert gate.started.wait(10)
        threads += [threading.Thread(target=send, args=(i,)) for i in range(1, 7)]
        for t in threads[1:]:
            t.start()
        wait_for(lambda: srv.batcher.queue_depth == 6)
        srv.sigterm()
        wait_for(lambda: srv.batcher.draining)
        with httpx.Client(timeout=30) as c:
            refused = post(c, srv.url, list(x[9]))
        assert refused.status_code == 503
        gate.open.set()
        for t in threads:
            t.join(30)
        srv.thread.join(30)
        assert not srv.thread.is_alive()  # the server drained and exited on its own
    finally:
        srv.stop()
    assert sorted(out) == list(range(7))
    assert all(r.status_code == 200 for r in out.values())
    assert sorted(v for c in gate.calls for v in c) == sorted(f32(x[i][0]) for i in range(7))


@pytest.mark.usefixtures("engine")
def test_sigterm_on_a_real_process_loses_no_request(tmp_path):
    """Subprocess server, slow real model, SIGTERM while requests are queued: every request
    gets an answer (200, or 503 once draining), none gets a dropped connection."""
    bundle = make_slow_bundle(tmp_path / "slow", width=512, layers=24)
    env = {"PACKSERVE_SHUTDOWN_GRACE_S": "0.3", "PACKSERVE_DRAIN_TIMEOUT_S": "30"}
    with running_server(bundle, "--batching", "--max-batch-size", "4", env=env) as srv:

        async def main() -> list[Any]:
            async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=40)) as c:
                tasks = [asyncio.ensure_future(c.post(f"{srv.url}/predict",
                                                      json={"features": [0.1 * i, 0.2, 0.3, 0.4]}))
                         for i in range(40)]
                # SIGTERM once requests are being served (a fixed 0.15 s was sometimes before
                # the first one arrived on a busy host: every request then got 503)
                end = time.monotonic() + 20
                async with httpx.AsyncClient(timeout=10) as probe:
                    while time.monotonic() < end:
                        m = (await probe.get(f"{srv.url}/metrics")).text
                        if any(line.startswith("packserve_requests_in_flight ")
                               and float(line.split()[1]) >= 2 for line in m.splitlines()):
                            break
                        await asyncio.sleep(0.01)
                srv.proc.send_signal(signal.SIGTERM)
                return await asyncio.gather(*tasks, return_exceptions=True)

        results = asyncio.run(main())
        code = srv.proc.wait(60)
    errors = [r for r in results if not isinstance(r, httpx.Response)]
    assert not errors, errors[:3]
    statuses = [r.status_code for r in results]
    assert set(statuses) <= {200, 503}
    assert statuses.count(200) >= 1
    assert code == 0


# --- configuration ---------------------------------------------------------------------------


def test_per_model_overrides_apply_on_top_of_the_global_settings(monkeypatch):
    from packserve.serve.batching import resolve_config

    monkeypatch.setenv("PACKSERVE_MODEL_BATCHING", '{"fraud": {"batching": true, "max_wait_ms": 0}}')
    s = ServeSettings(max_batch_size=32, max_queue=10)
    fraud, iris = resolve_config(s, "fraud"), resolve_config(s, "iris")
    assert fraud.enabled and fraud.max_wait_ms == 0 and fraud.max_batch_size == 32
    assert not iris.enabled and iris.max_wait_ms == s.max_wait_ms and iris.max_queue == 10
    with pytest.raises(ValueError):
        ServeSettings(model_batching="{not json")
    with pytest.raises(ValueError):
        ServeSettings(model_batching='{"fraud": {"max_queue": 0}}')


def test_batching_only_for_the_models_that_ask_for_it(repo_dir):
    override = '{"fraud": {"batching": true}}'
    with serving(repo_dir, batching=False, model_batching=override, default_model="fraud") as srv:
        registry = srv.app.state.registry
        batched = sorted((h.name, h.version) for h in registry.handles() if h.batcher is not None)
        assert batched == [("fraud", "1.0.0"), ("fraud", "2.0.0")]
        r = httpx.post(f"{srv.url}/models/iris/predict", json={"features": [5.1, 3.5, 1.4, 0.2]})
        assert r.status_code == 200


def test_cli_flags_reach_the_batcher(chapter_bundle, chapter_data):
    with running_server(chapter_bundle, "--batching", "--max-batch-size", "8", "--max-queue", "5",
                        "--max-wait-ms", "0", "--timeout-ms", "1500") as srv:
        r = httpx.post(f"{srv.url}/predict", json={"features": list(chapter_data.x_test[0])})
        assert r.status_code == 200
        metrics = httpx.get(f"{srv.url}/metrics").text
        assert 'packserve_batch_size_rows_count{model="fraud",version="1.0.0"} 1.0' in metrics
        assert "model fraud/1.0.0: batching on (max_batch_size=8, max_wait_ms=0, max_queue=5, " \
               "timeout_ms=1500)" in srv.output()

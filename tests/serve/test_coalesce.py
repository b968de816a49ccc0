"""Requests arriving together share one model call, with the answers of lone calls (serve/coalesce.py).

Units: :class:`PassBatch` (one call per pass, slices, a failing call retried per request, the
loop rule's row bound, cancelled requests skipped, no request left waiting) and
:func:`row_stable`. In-process: the chapter app answers a wave of concurrent requests with the
same bytes as one by one, in fewer calls. Real server: 24 concurrent clients get exactly the
answers each row gets alone, in fewer model calls than requests; one client at a time and
``--no-coalesce`` never share a call.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from helpers.metrics import sample_sum
from helpers.models import example
from helpers.server import running_server
from packserve.serve import create_app
from packserve.serve.coalesce import PassBatch, row_stable
from packserve.serve.settings import ServeSettings

Feeds = dict[str, np.ndarray]
Result = tuple[list[Any], list[list[float]]]


class Model:
    """A fake fused-plan step: label = row sum > 0, probabilities = the row's first two values."""

    def __init__(self, fail_on: float | None = None) -> None:
        self.calls: list[int] = []
        self.fail_on = fail_on

    def __call__(self, feeds: Feeds) -> Result:
        x = feeds["x"]
        self.calls.append(len(x))
        if self.fail_on is not None and (x == self.fail_on).any():
            raise ValueError("bad row")
        return [int(r.sum() > 0) for r in x], x[:, :2].tolist()


def _finish(result: Result) -> bytes:
    return json.dumps(result).encode()


def _cut(result: Result, start: int, stop: int) -> Result:
    return result[0][start:stop], result[1][start:stop]


def _batch(model: Model, inline: Callable[[int], bool] = lambda rows: True) -> PassBatch[Result]:
    return PassBatch(model, _cut, inline)


def _rows(*values: float) -> Feeds:
    return {"x": np.array([[v, -v, 1.0] for v in values], dtype=np.float32)}


async def _wave(batch: PassBatch[Result], requests: list[Feeds]) -> list[Any]:
    futures = [batch.join(f, len(f["x"]), _finish) for f in requests]
    return await asyncio.gather(*futures, return_exceptions=True)


def test_requests_joining_in_one_pass_share_one_call_and_get_their_own_rows() -> None:
    model = Model()
    batch = _batch(model)
    requests = [_rows(1.0), _rows(2.0, 3.0), _rows(-4.0)]
    answers = asyncio.run(_wave(batch, requests))
    assert model.calls == [4]
    alone = Model()
    assert answers == [_finish(alone(r)) for r in requests]


def test_a_failing_shared_call_is_retried_per_request() -> None:
    """One request's bad row fails only that request; the others are answered."""
    model = Model(fail_on=2.0)
    answers = asyncio.run(_wave(_batch(model), [_rows(1.0), _rows(2.0), _rows(3.0)]))
    assert model.calls == [3, 1, 1, 1]
    assert isinstance(answers[1], ValueError)
    assert answers[0] == _finish(Model()(_rows(1.0)))
    assert answers[2] == _finish(Model()(_rows(3.0)))


def test_a_shared_call_holds_at_most_the_rows_allowed_on_the_loop() -> None:
    model = Model()
    batch = _batch(model, lambda rows: rows <= 3)
    answers = asyncio.run(_wave(batch, [_rows(1.0, 2.0), _rows(3.0), _rows(4.0), _rows(5.0, 6.0, 7.0)]))
    assert model.calls == [3, 1, 3]
    assert not any(isinstance(a, Exception) for a in answers)


def test_a_cancelled_request_is_not_computed() -> None:
    model = Model()
    batch = _batch(model)

    async def wave() -> list[Any]:
        futures = [batch.join(f, 1, _finish) for f in (_rows(1.0), _rows(2.0), _rows(3.0))]
        futures[1].cancel()
        return await asyncio.gather(futures[0], futures[2])

    assert len(asyncio.run(wave())) == 2
    assert model.calls == [2]


def test_no_joined_request_is_left_waiting_when_answering_fails() -> None:
    """An error outside the model call (here: encoding the answer) reaches every request."""
    def broken(result: Result) -> bytes:
        raise RuntimeError("encoder broke")

    async def wave() -> list[Any]:
        batch = _batch(Model())
        futures = [batch.join(f, 1, broken) for f in (_rows(1.0), _rows(2.0))]
        return await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 5)

    assert [type(a) for a in asyncio.run(wave())] == [RuntimeError, RuntimeError]


def test_row_stable_tells_row_wise_models_from_batch_dependent_ones() -> None:
    example = {"x": np.array([[0.5, 1.5, -2.0]], dtype=np.float32)}

    def row_wise(feeds: Feeds) -> list[np.ndarray]:
        return [np.tanh(feeds["x"]) * 3]

    def batch_dependent(feeds: Feeds) -> list[np.ndarray]:  # e.g. another summation order
        x = feeds["x"]
        return [x + np.float32(len(x) > 4) * np.float32(1e-7)]

    def refuses_batches(feeds: Feeds) -> list[np.ndarray]:
        if len(feeds["x"]) > 1:
            raise ValueError("batch size fixed at 1")
        return [feeds["x"]]

    assert row_stable(row_wise, example)
    assert not row_stable(batch_dependent, example)
    assert not row_stable(refuses_batches, example)


# --- the chapter app ------------------------------------------------------------------


def _calls(app: Any) -> float:
    return sample_sum(app.metrics.render().decode(), "packserve_inference_duration_seconds_count")


def _predict_body(row: list[float]) -> bytes:
    return json.dumps({"features": row}).encode()


def _v2_body(row: list[float]) -> bytes:
    return json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, len(row)],
                                   "data": row}]}).encode()


@pytest.mark.parametrize(("bundle_fixture", "path", "encode"), [
    ("chapter_bundle", "/predict", _predict_body),  # the fused plan
    ("regressor_bundle", "/predict", _predict_body),  # the generic path (no plan)
    ("chapter_bundle", "/v2/models/fraud/infer", _v2_body),  # V2: the generic path too
])
def test_concurrent_requests_get_the_bytes_of_lone_requests(
    request: pytest.FixtureRequest, bundle_fixture: str, path: str, encode: Callable[[list[float]], bytes],
) -> None:
    bundle: Path = request.getfixturevalue(bundle_fixture)
    width = _n(bundle)
    bodies = [encode([float(i % 7) - 3.0 + j / 10 for j in range(width)]) for i in range(20)]

    async def main() -> tuple[list[bytes], list[bytes], float, float]:
        app = create_app(ServeSettings(model_path=bundle))
        await app.registry.load_all()
        assert app.registry.resolve(None, None).shared is not None  # the model passed the check
        alone = []
        for b in bodies:  # one request per loop pass: never shared
            alone.append(await _ask(app, b, path))
            await asyncio.sleep(0)
        calls0 = _calls(app)
        await asyncio.gather(*(_ask(app, b, path) for b in bodies))  # a busy pass: the next shares
        calls1 = _calls(app)
        together = await asyncio.gather(*(_ask(app, b, path) for b in bodies))
        return alone, list(together), calls1 - calls0, _calls(app) - calls1

    alone, together, first_wave, second_wave = asyncio.run(main())
    assert together == alone
    assert first_wave == 20  # nothing said requests arrive together yet
    assert second_wave == 1


def test_requests_of_different_shapes_never_share_a_call() -> None:
    """A variable axis (a sequence length): one call per shape, as --batching does."""
    model = Model()
    batch = _batch(model)
    wide = {"x": np.ones((1, 4), dtype=np.float32)}
    answers = asyncio.run(_wave(batch, [_rows(1.0), wide, _rows(2.0), wide]))
    assert sorted(model.calls) == [2, 2]
    assert answers[0] == _finish(Model()(_rows(1.0)))
    assert answers[1] == _finish(Model()(wide))


def _n(bundle: Path) -> int:
    return len(example(bundle))


async def _ask(app: Any, body: bytes, path: str = "/predict") -> bytes:
    sent: list[dict[str, Any]] = []
    scope = {"type": "http", "method": "POST", "path": path, "query_string": b"",
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())], "client": ("127.0.0.1", 1)}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    assert sent[0]["status"] == 200, sent
    return bytes(sent[1]["body"])


# --- real server ----------------------------------------------------------------------


def _bodies(bundle: Path, n: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(7)
    width = _n(bundle)
    return [{"features": rng.normal(size=width).round(4).tolist()} for _ in range(n)]


def _concurrently(url: str, bodies: list[dict[str, Any]], clients: int) -> list[bytes]:
    out: list[bytes] = [b""] * len(bodies)
    start = threading.Barrier(clients)

    def client(k: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            start.wait()
            for i in range(k, len(bodies), clients):
                r = c.post("/predict", json=bodies[i])
                assert r.status_code == 200, r.text
                out[i] = r.content

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def _serve_and_count(bundle: Path, *args: str, clients: int) -> tuple[list[bytes], list[bytes], float, float]:
    bodies = _bodies(bundle, 480)
    with running_server(bundle, *args) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        alone = [c.post("/predict", json=b).content for b in bodies]
        metrics: Callable[[], float] = lambda: sample_sum(  # noqa: E731
            c.get("/metrics").text, "packserve_inference_duration_seconds_count")
        calls0 = metrics()
        together = _concurrently(server.url, bodies, clients)
        return alone, together, calls0, metrics() - calls0


@pytest.mark.slow
def test_a_real_server_shares_calls_between_concurrent_clients(chapter_bundle: Path) -> None:
    alone, together, sequential_calls, concurrent_calls = _serve_and_count(chapter_bundle, clients=24)
    assert together == alone
    assert sequential_calls == len(alone)  # one client at a time: one call each
    assert concurrent_calls < len(alone)


@pytest.mark.slow
def test_no_coalesce_keeps_one_call_per_request(chapter_bundle: Path) -> None:
    alone, together, _, concurrent_calls = _serve_and_count(chapter_bundle, "--no-coalesce", clients=24)
    assert together == alone
    assert concurrent_calls == len(alone)

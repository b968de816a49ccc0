"""In-process unit checks: routing table, JSON parsing, validation vs schema, offloading, ASGI."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import packserve
from packserve.errors import BadRequestError, InputError
from packserve.runtime import Predictor
from packserve.serve.gateway import RouteTable
from packserve.serve.offload import CostModel
from packserve.serve.openapi.schemas import model_schemas
from packserve.serve.payloads.validation import RequestDecoder, parse_json
from packserve.serve.predict import PredictEndpoint
from packserve.serve.registry import ModelHandle, ModelRegistry
from packserve.serve.settings import ServeSettings
from packserve.serve.v2 import InferEndpoint


def route_table() -> RouteTable:
    registry = ModelRegistry()
    return RouteTable(
        [PredictEndpoint(registry, max_body_bytes=1), InferEndpoint(registry, max_body_bytes=1)]
    )


def match(path: str) -> tuple[str, str | None, str | None, bool] | None:
    """The gateway's one table, as (template, name, version, batch?)."""
    hit = route_table().match(path)
    return None if hit is None else (hit[0].template, hit[1], hit[2], hit[0].batch)


def test_match_table() -> None:
    assert match("/predict") == ("/predict", None, None, False)
    assert match("/predict/batch") == ("/predict/batch", None, None, True)
    assert match("/models/a/predict") == ("/models/{name}/predict", "a", None, False)
    assert match("/models/a/predict/batch") == ("/models/{name}/predict/batch", "a", None, True)
    assert match("/models/a/versions/2/predict") == (
        "/models/{name}/versions/{version}/predict", "a", "2", False)
    assert match("/models/a/versions/2/predict/batch")[3] is True
    for miss in ("/models", "/models/a", "/models//predict", "/models/a/versions/2", "/predictx",
                 "/models/a/predict/batch/x", "/models/a/versions//predict", "/health"):
        assert match(miss) is None, miss


def test_match_table_v2_infer_and_endpoints() -> None:
    table = route_table()
    v2 = table.match("/v2/models/a/infer")
    assert v2 is not None and isinstance(v2[0].endpoint, InferEndpoint)
    assert match("/v2/models/a/infer") == ("/v2/models/{name}/infer", "a", None, False)
    assert match("/v2/models/a/versions/3/infer") == (
        "/v2/models/{name}/versions/{version}/infer", "a", "3", False)
    hit = table.match("/models/a/predict")
    assert hit is not None and isinstance(hit[0].endpoint, PredictEndpoint)
    for miss in ("/v2/models/a", "/v2/models//infer", "/v2/models/a/versions//infer", "/v2/models/a/ready",
                 "/v2/models/a/infer/x", "/v2", "", "/"):
        assert match(miss) is None, miss


@pytest.mark.parametrize("body, exc", [
    (b"", BadRequestError), (b"{", BadRequestError), (b'{"a": NaN}', InputError),
    (b'{"a": -Infinity}', InputError), (b'{"a": 1e999}', InputError), (b'["\\udc00"]', InputError),
])
def test_parse_json_errors(body: bytes, exc: type) -> None:
    with pytest.raises(exc):
        parse_json(body)


def _pythonpath() -> dict[str, str]:
    """The checkout under test (a worktree's PYTHONPATH), not only the installed package."""
    import os

    return {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}


def test_settings_env_prefix_and_cli_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    monkeypatch.setenv("PACKSERVE_MAX_BATCH", "7")
    monkeypatch.setenv("PACKSERVE_API_KEY", "k")
    s = ServeSettings()
    assert s.max_batch == 7 and s.api_key is not None and s.api_key.get_secret_value() == "k"
    out = subprocess.run([sys.executable, "-m", "packserve", "serve", "--help"], capture_output=True,
                         text=True, check=True,
                         env={"COLUMNS": "200", "PATH": "", **_pythonpath()}).stdout
    from packserve.cli.serve import REPEATABLE  # list fields: a repeatable flag in the singular

    for name in ServeSettings.model_fields:
        if name != "model_path":
            assert REPEATABLE.get(name, "--" + name.replace("_", "-")) in out, name


# --- validation agrees with the published schema ---------------------------------------------

VALUES = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.integers(min_value=-(2**31), max_value=2**31),
    st.text(max_size=5),
    st.booleans(),
    st.none(),
    st.lists(st.integers(0, 3), max_size=2),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(row=st.lists(VALUES, min_size=2, max_size=4), by_name=st.booleans())
def test_decoder_accepts_exactly_what_the_schema_accepts(credit_bundle: Path, row, by_name) -> None:
    manifest = packserve.load(credit_bundle).manifest
    names = manifest.feature_names
    features = dict(zip(names, row, strict=False)) if by_name else row
    body = orjson.dumps({"features": features})
    schema_ok = True
    try:
        model_schemas(manifest, "credit", 10)["request"].model_validate_json(body, strict=True)
    except Exception:
        schema_ok = False
    decoder_ok = True
    try:
        RequestDecoder(manifest, max_batch=10).decode_single(parse_json(body))
    except InputError:
        decoder_ok = False
    assert decoder_ok == schema_ok, (features, decoder_ok, schema_ok)


def test_decoder_feeds_match_runtime(chapter_bundle: Path, chapter_data) -> None:
    p = packserve.load(chapter_bundle)
    rows = chapter_data.x_test[:5]
    dec = RequestDecoder(p.manifest, max_batch=10)
    feeds = dec.decode_batch({"instances": [{"features": r} for r in rows.tolist()]})
    ref = p.to_feeds(rows)
    assert feeds.keys() == ref.keys()
    for k in feeds:
        assert feeds[k].dtype == ref[k].dtype and np.array_equal(feeds[k], ref[k])
    for i, row in enumerate(rows.tolist()):  # the single-row fast path gives the same tensors
        one = dec.decode_single({"features": row})
        assert all(np.array_equal(one[k], ref[k][i : i + 1]) and one[k].dtype == ref[k].dtype
                   for k in ref)
    with pytest.raises(InputError) as info:
        dec.decode_single({"features": [0.0] * 14 + [-1e39]})
    assert info.value.where == "feature 'f14'"


@pytest.mark.parametrize("fixture", ["chapter_bundle", "iris_string_bundle", "credit_bundle"])
def test_small_and_large_batch_encodings_agree(fixture: str, request: pytest.FixtureRequest) -> None:
    from packserve.serve.payloads.encoding import ResponseEncoder

    bundle = request.getfixturevalue(fixture)
    p = packserve.load(bundle)
    rows = p.manifest.examples * 100
    pred = p.predict(rows)
    enc = ResponseEncoder(p.manifest, "v")
    large = orjson.loads(enc.batch(pred))["predictions"]
    small = orjson.loads(enc.batch(pred.slice(0, 30)))["predictions"]
    assert large[:30] == small
    single = orjson.loads(enc.single(pred.slice(0, 1)))
    assert {k: single[k] for k in small[0]} == small[0] and single["model_version"] == "v"
    assert type(small[0]["prediction"]) is type(p.manifest.outputs.classes[0])


# --- offloading ----------------------------------------------------------------------------------


def test_cost_model_rules() -> None:
    cm = CostModel(0.001)
    assert not cm.inline(1)  # uncalibrated: never inline
    cm.calibrate(lambda n: 0.00001 + 0.000001 * n)
    assert cm.inline(1) and cm.inline(100) and not cm.inline(10_000)
    slow = CostModel(0.001)
    slow.calibrate(lambda n: 0.01)
    assert not slow.inline(1)
    never = CostModel(0.0)
    never.calibrate(lambda n: 1e-9)
    assert not never.inline(1)
    # a preempted call (5 ms once, twice) is an outlier; a model that turned slow wins in 3 calls
    fast = CostModel(0.00025)
    fast.calibrate(lambda n: 0.00001)
    for _ in range(2):
        fast.observe(1, 0.005)
        fast.observe(1, 0.00001)
        assert fast.inline(1)
    for _ in range(3):
        fast.observe(1, 0.005)
    assert not fast.inline(1)
    for _ in range(3):  # and back when it is fast again
        fast.observe(1, 0.00001)
    assert fast.inline(1)


def test_a_fast_model_pushed_off_the_loop_comes_back_through_probes() -> None:
    """Preemption on a busy host can push a fast model off the loop; in a thread its calls then
    measure the GIL wait too (inflated), so only inline probes can bring it back."""
    from packserve.serve.offload import PROBE_EVERY

    cm = CostModel(0.00025)
    cm.calibrate(lambda n: 0.00003)
    for _ in range(3):  # three preempted calls: off the loop
        cm.observe(1, 0.0006)
    assert not cm.inline(1)
    routes = []
    for _ in range(3 * PROBE_EVERY):
        inline = cm.route(1)
        routes.append(inline)
        # a thread call measures 0.5 ms (GIL wait); a probe measures the model: 30 us
        cm.observe(1, 0.00003 if inline else 0.0005, inline=inline)
    assert sum(routes) == 3 and routes[PROBE_EVERY - 1] and not any(routes[:PROBE_EVERY - 1])
    assert cm.inline(1) and cm.route(1)
    # a model that is really slow stays off the loop: its probes measure it slow
    slow = CostModel(0.00025)
    slow.calibrate(lambda n: 0.0005)
    for _ in range(5 * PROBE_EVERY):
        inline = slow.route(1)
        slow.observe(1, 0.0005, inline=inline)
    assert not slow.inline(1)
    # far over the bound: never probed
    far = CostModel(0.00025)
    far.calibrate(lambda n: 0.01)
    assert not any(far.route(1) for _ in range(2 * PROBE_EVERY))


class Sleepy(Predictor):
    """Wraps a real predictor and sleeps in every call: a slow model, for the loop tests."""

    def __init__(self, inner: Predictor, delay: float) -> None:
        super().__init__(inner.manifest)
        self.inner, self.delay = inner, delay

    def _run_raw(self, feeds):  # type: ignore[no-untyped-def]
        if self.delay:
            time.sleep(self.delay)
        return self.inner._run_raw(feeds)


def _handle(bundle: Path, delay: float) -> ModelHandle:
    from concurrent.futures import ThreadPoolExecutor

    inner = packserve.load(bundle)
    h = ModelHandle("fraud", "1", bundle, inner.manifest, cost=CostModel(0.00025),
                    executor=ThreadPoolExecutor(4))
    h.predictor = Sleepy(inner, delay)
    from packserve.serve.handle import ModelState, _timed_runner

    h.cost.calibrate(_timed_runner(h.predictor))
    h.state = ModelState.READY
    return h


async def _max_loop_gap(work) -> float:  # type: ignore[no-untyped-def]
    gaps: list[float] = []
    stop = False

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop:
            await asyncio.sleep(0.002)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    t = asyncio.create_task(ticker())
    await work
    stop = True
    await t
    return max(gaps)


def test_slow_model_runs_off_the_loop(chapter_bundle: Path) -> None:
    h = _handle(chapter_bundle, 0.05)
    assert not h.cost.inline(1)
    feeds = h.decoder.decode_single({"features": [0.1] * 15})  # type: ignore[union-attr]

    async def main() -> float:
        return await _max_loop_gap(asyncio.gather(*(h.infer(feeds) for _ in range(4))))

    assert asyncio.run(main()) < 0.03


def test_model_turning_slow_leaves_the_loop(chapter_bundle: Path) -> None:
    h = _handle(chapter_bundle, 0.0)
    assert h.cost.inline(1)  # the chapter model: a few microseconds, inline
    feeds = h.decoder.decode_single({"features": [0.1] * 15})  # type: ignore[union-attr]
    h.predictor.delay = 0.02  # type: ignore[union-attr]

    async def main() -> int:
        for i in range(20):
            await h.infer(feeds)
            if not h.cost.inline(1):
                return i + 1
        return -1

    calls = asyncio.run(main())
    assert 1 <= calls <= 3


# --- in-process ASGI -------------------------------------------------------------------------------


def test_asgi_readiness_before_load_and_metrics_auth(chapter_bundle: Path) -> None:
    from packserve.serve import create_app

    app = create_app(ServeSettings(model_path=chapter_bundle, api_key="k", metrics_auth=True))

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            r = await c.get("/health/ready")
            assert r.status_code == 503 and r.json()["status"] == "loading"
            h = await c.get("/health")
            assert h.status_code == 503 and h.json() == {
                "status": "loading", "model_loaded": False, "model_version": "1.0.0"}
            r = await c.post("/predict", json={"features": [0.0] * 15}, headers={"x-api-key": "k"})
            assert r.status_code == 503 and r.json()["error"] == "model_not_ready"
            await app.registry.load_all()
            assert (await c.get("/health/ready")).status_code == 200
            assert (await c.get("/metrics")).status_code == 401
            assert (await c.get("/metrics", headers={"authorization": "Bearer k"})).status_code == 200
            r = await c.post("/predict", json={"features": [0.0] * 15}, headers={"x-api-key": "k"})
            assert r.status_code == 200

    asyncio.run(main())


def test_answer_finished_after_a_drain_began_closes_the_connection(chapter_bundle: Path) -> None:
    """/predict sends with the server's own send; a drain that starts while a request computes
    still tells that keep-alive client to go elsewhere (Connection: close)."""
    from packserve.serve import create_app

    app = create_app(ServeSettings(model_path=chapter_bundle))

    async def main() -> None:
        await app.registry.load_all()
        handle = app.registry.resolve(None, None)
        real_observer = handle.observer
        assert real_observer is not None

        def computed_then_drain(*args):  # type: ignore[no-untyped-def]
            real_observer(*args)  # called once the model computed (fused plan or generic path)
            app.serving.draining = True  # SIGTERM arrived while this request was computing

        handle.observer = computed_then_drain
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            body = {"features": [0.0] * 15}
            r = await c.post("/predict", json=body)
            assert r.status_code == 200 and r.headers["connection"] == "close"
            r = await c.post("/predict", json=body)  # the next one is refused, cleanly
            assert r.status_code == 503 and r.headers["connection"] == "close"
            assert "retry-after" in r.headers

    asyncio.run(main())

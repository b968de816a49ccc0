"""Where one ``/predict`` or ``/predict/batch`` request spends its CPU, stage by stage, in-process.

``bench_serve.py`` says *how fast* the server is; this says *where the time goes* (issue #5).
It builds the chapter model's bundle (XGBoost, 100 trees, depth 6, 15 features), starts the
real app with ``create_app`` (lifespan run, models loaded and calibrated), then:

1. times each stage alone in a tight loop: parse (orjson), validate (``RequestDecoder``),
   ONNX Runtime call, postprocess, encode (``ResponseEncoder``) — the stages of the model's
   fused plan (``serve/plan.py``: score output only, ``Postprocessor.classify``, the
   encoder's ``classified_*``) when it has one, as the server runs them;
2. times the whole ASGI call (gateway, routing, metrics, cost tracking, sends to a no-op
   ``send``) with a fake ``receive``/``send``, so "gateway" = whole - sum of stages.

The whole-app number is the baseline every stage is a share of, measured in the same run.
CPU time of this thread (``time.thread_time``), so time the process spends descheduled on a
shared host does not count. Hot-cache numbers: in a real server the kernel's socket work
and uvicorn run between requests, and the same stages take roughly 1.5-2x longer
(``py-spy``/``perf`` on a live server agree on the shares, not on the absolute microseconds).

    python benchmarks/profile_predict_path.py [--n 5000] [--rows 20]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))


def per_call_us(fn: Callable[[], object], n: int) -> float:
    for _ in range(min(500, n)):
        fn()
    best = float("inf")
    for _ in range(3):  # best of 3: the machine is shared
        t0 = time.thread_time()
        for _ in range(n):
            fn()
        best = min(best, (time.thread_time() - t0) / n)
    return best * 1e6


async def app_call_us(app: Any, path: str, body: bytes, n: int) -> float:
    headers = [(b"host", b"bench"), (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers,
             "query_string": b"", "client": ("127.0.0.1", 1)}
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    # A real server starts a few requests per event-loop pass; one pass with thousands of
    # requests would be shed by admission control (``queue_delay``): yield every 32 calls.
    for i in range(min(500, n)):
        await app(dict(scope), receive, send)
        if i % 32 == 31:
            await asyncio.sleep(0)
    best = float("inf")
    for _ in range(3):
        t0 = time.thread_time()
        for i in range(n):
            await app(dict(scope), receive, send)
            if i % 32 == 31:
                await asyncio.sleep(0)
        best = min(best, (time.thread_time() - t0) / n)
    assert set(statuses) == {200}, sorted(set(statuses))
    return best * 1e6


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000, help="calls per timing loop")
    ap.add_argument("--rows", type=int, default=20, help="instances in the /predict/batch body")
    args = ap.parse_args()

    from bench_serve import build_bundle

    from packserve.serve.app import create_app
    from packserve.serve.payloads.validation import RequestDecoder, parse_json
    from packserve.serve.settings import ServeSettings

    bundle, rows = build_bundle(Path(tempfile.mkdtemp(prefix="profile-predict-")))
    rows = (rows * (args.rows // len(rows) + 1))[: args.rows]
    app = create_app(ServeSettings(model_path=bundle))
    async with app.router.lifespan_context(app):
        assert app.serving.load_task is not None
        await app.serving.load_task
        handle = app.registry.resolve(None, None)
        predictor, decoder, encoder = handle.predictor, handle.decoder, handle.encoder
        assert predictor is not None and isinstance(decoder, RequestDecoder) and encoder is not None
        fused = handle.plan is not None
        print(f"fused plan: {'yes' if fused else 'no (generic path)'}")
        cases = [
            ("/predict", orjson.dumps({"features": rows[0]}), False),
            ("/predict/batch", orjson.dumps({"instances": [{"features": r} for r in rows]}), True),
        ]
        post = predictor.postprocessor  # compiled once per model, as the server uses it
        for path, body, batch in cases:
            obj = parse_json(body)
            decode: Callable[[], object] = (
                partial(decoder.decode_batch, obj, body if fused else None) if batch
                else partial(decoder.decode_single, obj))
            feeds = decode()
            assert isinstance(feeds, dict)
            if fused:  # the plan's stages (serve/plan.py)
                assert post.probability_output is not None
                names = [post.probability_output]
                run: Callable[[], object] = partial(predictor.run_outputs, feeds, names)
                scores = predictor.run_outputs(feeds, names)[0]
                labels, probs = post.classify(scores)
                postprocess: Callable[[], object] = partial(post.classify, scores)
                encode: Callable[[], object] = (
                    partial(encoder.classified_batch, labels, probs) if batch
                    else partial(encoder.classified_single, labels[0], probs[0]))
            else:
                raw = predictor._run_raw(feeds)  # the bare runtime call, on purpose
                pred = post(raw)
                run = partial(predictor._run_raw, feeds)
                postprocess = partial(post, raw)
                encode = partial(encoder.batch if batch else encoder.single, pred)
            stages = {
                "parse (orjson)": per_call_us(partial(parse_json, body), args.n),
                "validate -> feeds": per_call_us(decode, args.n),
                "onnxruntime run": per_call_us(run, args.n),
                "postprocess": per_call_us(postprocess, args.n),
                "encode (orjson)": per_call_us(encode, args.n),
            }
            whole = await app_call_us(app, path, body, args.n)
            stages["gateway, routing, metrics"] = max(0.0, whole - sum(stages.values()))
            print(f"\n{path} ({len(body)} B body) - whole ASGI call {whole:.1f} us (baseline = 100%)")
            for name, us in stages.items():
                print(f"  {name:28s} {us:7.2f} us  {100 * us / whole:5.1f}%")


if __name__ == "__main__":
    asyncio.run(main())

"""Baseline (c) of ``bench_serve.py``: a bare ASGI app that reads the body and returns a fixed
JSON. The ceiling for any Python app on the same uvicorn: no routing, no parsing, no model."""

from __future__ import annotations

from typing import Any

from benchmarks.serve_apps import lifespan

BODY = b'{"prediction":1,"probability":0.97,"probabilities":{"0":0.03,"1":0.97},"model_version":"1.0.0"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    more = True
    while more:  # drain the body without keeping it: the cheapest possible read
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})

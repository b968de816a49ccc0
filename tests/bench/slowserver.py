"""A deliberately slow test server with a known service time and a known concurrency cap.

Run as ``python slowserver.py PORT SERVICE_MS CAP``. A raw ASGI app under uvicorn:

* ``POST /predict`` (also ``/models/{name}/predict``, ``/predict/batch``): at most CAP requests
  are served at a time (asyncio.Semaphore), each takes SERVICE_MS -> capacity CAP/SERVICE_MS;
* ``POST /models/error/predict``: every 5th request gets a 503;
* ``POST /models/reset/predict``: every 5th request's connection is reset (TCP RST);
* ``POST /models/stall/predict``: no cap, SERVICE_MS each, but during the first 200 ms of
  every second of wall time requests are held until the window ends (a GC-pause-like stall);
* ``POST /models/leak/predict``: like ``/predict`` but keeps 64 KiB per request forever;
* ``GET /fixed``: a fixed JSON body at once (the generator-ceiling target);
* ``GET /stats`` and ``POST /stats/clear``: what the server did, to check client counts;
* ``GET /metrics``: process RSS and CPU in Prometheus text; ``GET /health/ready``;
* ``GET /models``: model metadata with a 3-feature signature (one string feature).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import sys
import time
from typing import Any

import psutil
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

SERVICE_S = float(sys.argv[2]) / 1000.0 if len(sys.argv) > 2 else 0.01
CAP = int(sys.argv[3]) if len(sys.argv) > 3 else 4
STALL_S = 0.2

sem: asyncio.Semaphore | None = None
stats: dict[str, int] = {}
counters: dict[str, int] = {}
bodies: list[Any] = []
leaked: list[bytes] = []
PROC = psutil.Process()

MODELS = {
    "models": [{
        "name": "toy", "version": "1.0.0", "task": "binary",
        "features": [{"name": "amount", "dtype": "float32"}, {"name": "count", "dtype": "int64"},
                     {"name": "country", "dtype": "string"}],
        "examples": [[12.5, 3, "FR"], [80.0, 1, "DE"], [3.2, 7, "FR"], [45.0, 2, "US"]],
    }]
}


def _bump(key: str) -> int:
    stats[key] = stats.get(key, 0) + 1
    return stats[key]


class Proto(HttpToolsProtocol):
    """Exposes the transport to the app so that it can reset connections."""

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self.scope.setdefault("extensions", {})["transport"] = self.transport  # type: ignore[typeddict-unknown-key]


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        msg = await receive()
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body"):
            return b"".join(chunks)


async def _send(send: Any, status: int, payload: Any, ctype: bytes = b"application/json") -> None:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def app(scope: Any, receive: Any, send: Any) -> None:
    global sem
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                sem = asyncio.Semaphore(CAP)
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    path, method = scope["path"], scope["method"]
    body = await _read_body(receive)
    if path == "/fixed":
        await _send(send, 200, b'{"label":1,"probability":0.93}')
        return
    if path == "/health/ready":
        await _send(send, 200, {"status": "ready"})
        return
    if path == "/models":
        await _send(send, 200, MODELS)
        return
    if path == "/stats":
        await _send(send, 200, {"stats": stats, "bodies": bodies[-50:]})
        return
    if path == "/stats/clear":
        stats.clear()
        bodies.clear()
        await _send(send, 200, {})
        return
    if path == "/metrics":
        text = (f"process_resident_memory_bytes {PROC.memory_info().rss}\n"
                f"process_cpu_seconds_total {sum(PROC.cpu_times()[:2])}\n")
        await _send(send, 200, text.encode(), b"text/plain; version=0.0.4")
        return
    if method != "POST" or not path.endswith("/predict") and not path.endswith("/predict/batch"):
        await _send(send, 404, {"error": "not_found"})
        return
    try:
        bodies.append(json.loads(body))
    except ValueError:
        await _send(send, 400, {"error": "bad_request"})
        return
    del bodies[:-200]
    mode = path.split("/")[2] if path.startswith("/models/") else ""
    if mode == "leak":
        leaked.append(b"x" * (64 * 1024))  # written, so it is resident
    if mode == "error":
        if _bump("error_seen") % 5 == 0:
            _bump("sent_503")
            await _send(send, 503, {"error": "overloaded"})
            return
    elif mode == "reset":
        if _bump("reset_seen") % 5 == 0:
            _bump("reset")
            transport = scope["extensions"]["transport"]
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
            return
    elif mode == "stall":
        phase = time.time() % 1.0
        if phase < STALL_S:
            _bump("stalled")
            await asyncio.sleep(STALL_S - phase)
        await asyncio.sleep(SERVICE_S)
        _bump("ok")
        await _send(send, 200, {"label": 1})
        return
    assert sem is not None
    async with sem:
        await asyncio.sleep(SERVICE_S)
    _bump("ok")
    await _send(send, 200, {"label": 1, "probability": 0.5})


if __name__ == "__main__":
    port = int(sys.argv[1])
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=Proto, log_level="critical",
                            access_log=False, lifespan="on", loop="uvloop")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    uvicorn.Server(config).run()

"""The prediction endpoints, served at the ASGI level.

``/predict``, ``/predict/batch``, ``/models/{name}[/versions/{version}]/predict[/batch]``
skip FastAPI's per-request machinery (dependency solving, a Pydantic object per instance,
``jsonable_encoder``): the body is read with a size cap, parsed by orjson, validated
vectorised by the model's :class:`RequestDecoder` and answered with orjson bytes. Their
OpenAPI description is still exact: :mod:`packserve.serve.schemas` builds it per model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from starlette.types import Receive, Scope, Send

from packserve.errors import MethodNotAllowedError, PackserveError
from packserve.serve.admission import Admission
from packserve.serve.batching import infer_until_disconnect
from packserve.serve.http import (
    INTERNAL_ERROR_BODY,
    JSON_HEADERS,
    ClientDisconnect,
    check_json,
    error_parts,
    header_map,
    read_body,
    send_bytes,
)
from packserve.serve.registry import ModelRegistry
from packserve.serve.validation import parse_json

log = logging.getLogger("packserve.serve")

Match = tuple[str, str | None, str | None, bool]
"""(route template, model name or None = default, version or None = newest, batch?)"""

_DEFAULT: dict[str, Match] = {
    "/predict": ("/predict", None, None, False),
    "/predict/batch": ("/predict/batch", None, None, True),
}


def match(path: str) -> Match | None:
    """Recognise a prediction path without regexes (it runs on every request)."""
    hit = _DEFAULT.get(path)
    if hit is not None or not path.startswith("/models/"):
        return hit
    parts = path[8:].split("/")
    n = len(parts)
    if n == 2 and parts[1] == "predict" and parts[0]:
        return ("/models/{name}/predict", parts[0], None, False)
    if n == 3 and parts[1] == "predict" and parts[2] == "batch" and parts[0]:
        return ("/models/{name}/predict/batch", parts[0], None, True)
    if n >= 4 and parts[1] == "versions" and parts[0] and parts[2] and parts[3] == "predict":
        if n == 4:
            return ("/models/{name}/versions/{version}/predict", parts[0], parts[2], False)
        if n == 5 and parts[4] == "batch":
            return ("/models/{name}/versions/{version}/predict/batch", parts[0], parts[2], True)
    return None


class PredictEndpoint:
    """One object serves every prediction path; returns the status it sent (for metrics).

    It sends with the server's own ``send`` (no wrapper per request): ``draining`` tells it
    to add ``Connection: close`` to an answer finished after a drain began, so keep-alive
    clients move to another replica instead of sending more work here.
    """

    def __init__(
        self, registry: ModelRegistry, *, max_body_bytes: int,
        draining: Callable[[], bool] = lambda: False, admission: Admission | None = None,
    ) -> None:
        self.registry = registry
        self.admission = admission or Admission(budget_ms=0)
        self.max_body_bytes = max_body_bytes
        self.draining = draining

    async def __call__(self, scope: Scope, receive: Receive, send: Send, hit: Match) -> int:
        _, name, version, batch = hit
        status, headers = 200, JSON_HEADERS
        try:
            if scope["method"] != "POST":
                raise MethodNotAllowedError("this endpoint takes POST", allow=("POST",))
            handle = self.registry.resolve(name, version)
            now = time.monotonic()
            # admitted (or 503 at once) before the body is read; held from routing on: an
            # unload or a newer version waits for it, it finishes on the version it got
            self.admission.enter(handle, now)
            try:
                request_headers = header_map(scope)
                deadline = self.admission.deadline(request_headers, now)
                check_json(request_headers)
                body = await read_body(receive, request_headers, self.max_body_bytes)
                obj = parse_json(body)
                decoder, encoder = handle.decoder, handle.encoder
                assert decoder is not None and encoder is not None
                if batch:
                    feeds = decoder.decode_batch(obj)
                    out = encoder.batch(await infer_until_disconnect(handle, feeds, receive, deadline))
                else:
                    feeds = decoder.decode_single(obj)
                    out = encoder.single(await infer_until_disconnect(handle, feeds, receive, deadline))
            finally:
                self.admission.leave(handle)
        except PackserveError as exc:
            status, out, headers = error_parts(exc)
        except ClientDisconnect:
            return 499
        except Exception:
            log.exception("unhandled error in %s", scope["path"])
            status, out = 500, INTERNAL_ERROR_BODY
        if self.draining() and _CLOSE not in headers:
            headers = [*headers, _CLOSE]
        await send_bytes(send, status, out, headers)
        return status


_CLOSE: tuple[bytes, bytes] = (b"connection", b"close")


__all__ = ["Match", "PredictEndpoint", "match"]

"""The prediction endpoints, served at the ASGI level.

``/predict``, ``/predict/batch``, ``/models/{name}[/versions/{version}]/predict[/batch]``
skip FastAPI's per-request machinery (dependency solving, a Pydantic object per instance,
``jsonable_encoder``): the body is read with a size cap, parsed by orjson, validated
vectorised by the model's :class:`RequestDecoder` and answered with orjson bytes. Their
OpenAPI description is still exact: :mod:`packserve.serve.openapi.schemas` builds it per model.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar

from starlette.types import Receive, Scope, Send

from packserve.runtime import Feeds
from packserve.serve.endpoint import Endpoint
from packserve.serve.http import JSON_HEADERS, Headers, check_json, read_body
from packserve.serve.payloads import parse_json
from packserve.serve.payloads.images import raw_param, top_k_param
from packserve.serve.registry import ModelHandle

#: (path template, batch?) of every prediction path, for the gateway's route table
PREDICT_ROUTES: tuple[tuple[str, bool], ...] = (
    ("/predict", False),
    ("/predict/batch", True),
    ("/models/{name}/predict", False),
    ("/models/{name}/predict/batch", True),
    ("/models/{name}/versions/{version}/predict", False),
    ("/models/{name}/versions/{version}/predict/batch", True),
)

#: the request's query string (``top_k``, ``raw`` of image bundles); ``answer`` takes no scope
_query: ContextVar[bytes] = ContextVar("packserve_predict_query", default=b"")


class PredictEndpoint(Endpoint):
    """One object serves every prediction path (the shared skeleton: :mod:`~packserve.serve.endpoint`)."""

    routes = PREDICT_ROUTES

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send,
        name: str | None, version: str | None, batch: bool,
    ) -> int:
        query = scope.get("query_string", b"")
        if not query:  # the common case: no context variable to set and reset
            return await super().__call__(scope, receive, send, name, version, batch)
        token = _query.set(query)
        try:
            return await super().__call__(scope, receive, send, name, version, batch)
        finally:
            _query.reset(token)

    async def answer(
        self, handle: ModelHandle, headers: dict[bytes, bytes], receive: Receive, batch: bool,
        deadline: float | None,
    ) -> tuple[bytes, Headers]:
        if handle.images is not None:
            answered, body = await self._images(handle, headers, receive, batch, deadline)
            if answered is not None:
                return answered
            obj = parse_json(body)  # a JSON tensor body: the client preprocessed
        else:
            check_json(headers)
            body = await read_body(receive, headers, self.max_body_bytes)
            obj = parse_json(body)
            plan = handle.plan
            if plan is not None:  # compiled at load: the same steps, fused (serve/plan.py)
                done = plan.answer(obj, body, batch, deadline)
                if isinstance(done, bytes):
                    return done, JSON_HEADERS
                if isinstance(done, asyncio.Future):  # joined a shared call (serve/coalesce.py)
                    del obj, body  # the parsed request is not needed while it waits
                    return await done, JSON_HEADERS
                return await self._generic(handle, done, batch, deadline), JSON_HEADERS
        decoder = handle.decoder
        assert decoder is not None
        feeds = decoder.decode_batch(obj) if batch else decoder.decode_single(obj)
        return await self._generic(handle, feeds, batch, deadline), JSON_HEADERS

    @staticmethod
    async def _generic(handle: ModelHandle, feeds: Feeds, batch: bool, deadline: float | None) -> bytes:
        encoder = handle.encoder
        assert encoder is not None
        pred = await handle.infer(feeds, deadline=deadline)
        return encoder.batch(pred) if batch else encoder.single(pred)

    async def _images(
        self, handle: ModelHandle, headers: dict[bytes, bytes], receive: Receive, batch: bool,
        deadline: float | None,
    ) -> tuple[tuple[bytes, Headers] | None, bytes]:
        """Encoded images -> (top-k labels, body); (None, body) for JSON without images."""
        images = handle.images
        assert images is not None
        query = _query.get()
        top_k, raw = top_k_param(query), raw_param(query)
        blobs, body = await images.read(headers, receive, self.max_body_bytes)
        if blobs is None:
            return None, body
        pred = await handle.infer(await images.feeds(blobs), deadline=deadline)
        if pred.probabilities is None:  # not a classifier: the raw outputs
            encoder = handle.encoder
            assert encoder is not None
            many = batch or len(blobs) > 1
            return (encoder.batch(pred) if many else encoder.single(pred), JSON_HEADERS), body
        out = images.encode(pred, top_k=top_k, batch=batch or len(blobs) > 1, raw=raw)
        return (out, JSON_HEADERS), body


__all__ = ["PREDICT_ROUTES", "PredictEndpoint"]

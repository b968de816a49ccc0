"""The prediction endpoints, served at the ASGI level.

``/predict``, ``/predict/batch``, ``/models/{name}[/versions/{version}]/predict[/batch]``
skip FastAPI's per-request machinery (dependency solving, a Pydantic object per instance,
``jsonable_encoder``): the body is read with a size cap, parsed by orjson, validated
vectorised by the model's :class:`RequestDecoder` and answered with orjson bytes. Their
OpenAPI description is still exact: :mod:`packserve.serve.openapi.schemas` builds it per model.
"""

from __future__ import annotations

from starlette.types import Receive

from packserve.serve.endpoint import Endpoint
from packserve.serve.http import JSON_HEADERS, Headers, check_json, read_body
from packserve.serve.payloads import parse_json
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


class PredictEndpoint(Endpoint):
    """One object serves every prediction path (the shared skeleton: :mod:`~packserve.serve.endpoint`)."""

    routes = PREDICT_ROUTES

    async def answer(
        self, handle: ModelHandle, headers: dict[bytes, bytes], receive: Receive, batch: bool,
        deadline: float | None,
    ) -> tuple[bytes, Headers]:
        check_json(headers)
        obj = parse_json(await read_body(receive, headers, self.max_body_bytes))
        decoder, encoder = handle.decoder, handle.encoder
        assert decoder is not None and encoder is not None
        if batch:
            feeds = decoder.decode_batch(obj)
            return encoder.batch(await handle.infer(feeds, deadline=deadline)), JSON_HEADERS
        feeds = decoder.decode_single(obj)
        return encoder.single(await handle.infer(feeds, deadline=deadline)), JSON_HEADERS


__all__ = ["PREDICT_ROUTES", "PredictEndpoint"]

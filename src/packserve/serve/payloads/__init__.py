"""Request bodies in, response bodies out, for the raw ``/predict`` endpoints.

``validation`` decodes tabular JSON (``{"features": ...}`` / ``{"instances": ...}``) into
feeds, vectorised, with a 422 that names the field; ``tensor`` decodes ``{"inputs": ...}``
envelopes of tensor bundles; ``encoding`` turns a prediction into orjson bytes. Each model
version gets its decoder and encoder once, at load (:class:`~packserve.serve.registry.ModelHandle`).
"""

from __future__ import annotations

from packserve.serve.payloads.encoding import ResponseEncoder
from packserve.serve.payloads.tensor import TensorRequestDecoder
from packserve.serve.payloads.validation import RequestDecoder, decoder_for, parse_json

__all__ = ["RequestDecoder", "ResponseEncoder", "TensorRequestDecoder", "decoder_for", "parse_json"]

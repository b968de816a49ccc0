"""What the server says about itself: the OpenAPI document and the pages that show it.

``schemas`` builds the exact per-model request/response schemas (``tensor`` for tensor
bundles), ``status`` documents every status an operation can answer, and ``docs`` serves
Swagger UI and ReDoc offline (``/docs``, ``/redoc``) with their own auth surface.
"""

from __future__ import annotations

from packserve.serve.openapi.docs import DOCS_CHALLENGES, docs_router, is_docs_surface
from packserve.serve.openapi.schemas import (
    SECURITY_SCHEMES,
    ErrorBody,
    example_row,
    model_schemas,
    prediction_openapi,
)
from packserve.serve.openapi.status import document_statuses

__all__ = [
    "DOCS_CHALLENGES",
    "SECURITY_SCHEMES",
    "ErrorBody",
    "docs_router",
    "document_statuses",
    "example_row",
    "is_docs_surface",
    "model_schemas",
    "prediction_openapi",
]

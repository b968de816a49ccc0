"""Raw ASGI helpers and the ONE mapping from exceptions to HTTP responses.

:func:`error_parts` is the only place a :class:`PackserveError` becomes a status, headers and
a JSON body; the fast prediction routes call it directly and FastAPI's exception handlers
(installed by ``create_app``, used by every other router, V2 included) go through
:func:`error_response`. Bodies come from ``to_dict()`` only: never a traceback or a path.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from packserve.errors import (
    BadRequestError,
    MethodNotAllowedError,
    OverloadedError,
    PackserveError,
    PayloadTooLargeError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
)

log = logging.getLogger("packserve.serve")

Headers = list[tuple[bytes, bytes]]
JSON_HEADERS: Headers = [(b"content-type", b"application/json")]
INTERNAL_ERROR_BODY = orjson.dumps({"error": "internal_error", "message": "internal server error"})
INTERNAL_ERROR_BODY_V2 = orjson.dumps({"error": "internal server error"})


class ClientDisconnect(Exception):
    """The client went away before its body was read; nothing is sent back."""


def is_v2_path(path: str) -> bool:
    """Open Inference Protocol paths answer errors in the protocol's shape."""
    return path == "/v2" or path.startswith("/v2/")


def error_body(exc: PackserveError, *, v2: bool = False) -> dict[str, Any]:
    """``to_dict()``, or for V2 paths the protocol's ``{"error": "<message>"}`` (same text)."""
    if not v2:
        return exc.to_dict()
    where = getattr(exc, "where", None)
    return {"error": f"{exc.message} ({where})" if where else exc.message}


def error_parts(exc: PackserveError, *, v2: bool = False) -> tuple[int, bytes, Headers]:
    """Status, body and headers for an error: the single exception -> HTTP mapping.

    ``v2`` (a ``/v2`` path) changes only the body's shape, never the status or headers.
    """
    status = exc.http_status
    headers: Headers = list(JSON_HEADERS)
    if isinstance(exc, OverloadedError):
        headers.append((b"retry-after", str(max(1, round(exc.retry_after_s))).encode()))
    if isinstance(exc, MethodNotAllowedError):
        headers.append((b"allow", ", ".join(exc.allow).encode()))
    if isinstance(exc, UnauthorizedError):
        headers.extend((b"www-authenticate", c.encode()) for c in exc.challenges)
    elif status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if isinstance(exc, PayloadTooLargeError | BadRequestError | UnsupportedMediaTypeError):
        # The rest of the body may still be on the wire: don't parse it as a next request.
        headers.append((b"connection", b"close"))
    if status >= 500 and exc.detail_for_logs:
        log.error("%s: %s (%s)", exc.code, exc.message, exc.detail_for_logs)
    return status, orjson.dumps(error_body(exc, v2=v2)), headers


def error_response(exc: PackserveError, *, v2: bool = False) -> Response:
    status, body, headers = error_parts(exc, v2=v2)
    resp = Response(content=body, status_code=status)
    resp.raw_headers = [*headers, (b"content-length", str(len(body)).encode())]
    return resp


async def send_bytes(send: Send, status: int, body: bytes, headers: Headers = JSON_HEADERS) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, exc: PackserveError, *, v2: bool = False) -> int:
    status, body, headers = error_parts(exc, v2=v2)
    await send_bytes(send, status, body, headers)
    return status


def header_map(scope: Scope) -> dict[bytes, bytes]:
    return dict(scope["headers"])


def check_json(headers: dict[bytes, bytes]) -> None:
    """415 unless the body is declared as JSON (``application/json`` or ``+json``)."""
    ctype = headers.get(b"content-type")
    if ctype is None:
        raise UnsupportedMediaTypeError("send the body as Content-Type: application/json")
    media = ctype.split(b";", 1)[0].strip().lower()
    if media != b"application/json" and not media.endswith(b"+json"):
        raise UnsupportedMediaTypeError("send the body as Content-Type: application/json")
    encoding = headers.get(b"content-encoding")
    if encoding is not None and encoding.strip().lower() != b"identity":
        raise UnsupportedMediaTypeError("compressed bodies are not accepted on this endpoint")


def _check_declared(headers: dict[bytes, bytes], limit: int) -> None:
    """413 for a declared Content-Length over ``limit``, before a byte of the body is read."""
    declared = headers.get(b"content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise BadRequestError("invalid Content-Length header") from None
        if length > limit:
            raise PayloadTooLargeError(f"body of {length} bytes exceeds the limit of {limit} bytes")


async def read_body(receive: Receive, headers: dict[bytes, bytes], limit: int) -> bytes:
    """Read a body, refusing with 413 as soon as it is known to exceed ``limit``.

    A declared Content-Length over the limit is refused before a byte of it is read; a
    chunked body is refused as soon as the bytes received pass the limit.
    """
    _check_declared(headers, limit)
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnect
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise PayloadTooLargeError(f"body exceeds the limit of {limit} bytes")
        return body
    parts = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"body exceeds the limit of {limit} bytes")
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


async def body_chunks(receive: Receive, headers: dict[bytes, bytes], limit: int) -> AsyncIterator[bytes]:
    """The body chunk by chunk as it arrives (a streaming parser's input), with
    :func:`read_body`'s limits: a declared Content-Length over ``limit`` is refused before a
    byte is read, a body that grows past it as soon as it does."""
    _check_declared(headers, limit)
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"body exceeds the limit of {limit} bytes")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


def limited_receive(receive: Receive, limit: int) -> Receive:
    """Wrap ``receive`` for routes that read the body themselves (FastAPI, V2): 413 past limit."""
    seen = 0

    async def wrapped() -> Any:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise PayloadTooLargeError(f"body exceeds the limit of {limit} bytes")
        return message

    return wrapped


def api_key_ok(headers: dict[bytes, bytes], key: bytes, *, basic: bool = False) -> bool:
    """``Authorization: Bearer <key>`` or ``X-API-Key: <key>``, compared in constant time.

    ``basic=True`` (the docs pages only) also takes the key as the password of HTTP Basic
    auth, any user name: the one way a browser can send a key on its own (it prompts).
    """
    auth = headers.get(b"authorization")
    if auth is not None and auth[:7].lower() == b"bearer " and hmac.compare_digest(auth[7:].strip(), key):
        return True
    if basic and auth is not None and auth[:6].lower() == b"basic ":
        try:
            _, _, password = base64.b64decode(auth[6:].strip(), validate=True).partition(b":")
        except (ValueError, binascii.Error):
            return False
        return hmac.compare_digest(password, key)
    given = headers.get(b"x-api-key")
    return given is not None and hmac.compare_digest(given, key)


__all__ = [
    "INTERNAL_ERROR_BODY",
    "INTERNAL_ERROR_BODY_V2",
    "JSON_HEADERS",
    "ClientDisconnect",
    "Headers",
    "api_key_ok",
    "body_chunks",
    "check_json",
    "error_body",
    "error_parts",
    "error_response",
    "header_map",
    "is_v2_path",
    "limited_receive",
    "read_body",
    "send_bytes",
    "send_error",
]

"""The skeleton every raw inference endpoint shares (``/predict...`` and V2 ``infer``).

The hot inference paths are served at the ASGI level, not through FastAPI: its per-request
machinery costs more than validating and running a small model. What such an endpoint does
around its own work is the same for every protocol, so it is written once here: POST only,
resolve the model version, admit the request or refuse it at once before its body is read
(:class:`~packserve.serve.admission.Admission`, which also holds the version from routing on
so an unload or a newer version waits for this request), its deadline, watch for a client
that leaves while the request is queued (:class:`DisconnectProbe`), map errors
through the one error mapping, add ``Connection: close`` once a drain began, send, and
report the status for metrics.

An answer sent before the request's body was read (refused at the door; 413/415 while or
before reading: :func:`~packserve.serve.http.error_parts`) says ``Connection: close``. Engines
differ on an unread body: uvicorn skips it and keeps the connection; granian (hyper) closes
the connection, without saying so, unless the whole body happens to be buffered already, and
a keep-alive client would then send its next request into a closed socket. So a refusal
whose declared body is small (``SMALL_BODY_BYTES``: it is on the wire already or nearly)
keeps the connection (``keep_small_refusals``): uvicorn's parser skips the body; on granian
(``drain_small_refusals``) it is read and discarded, unparsed, before the answer. Under
overload a closed connection makes every refusal cost a reconnect — measured 3x fewer
refusals a second (issue #15 notes, Session 4). Larger or chunked bodies, and any refusal
while draining, close.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar

from starlette.types import Receive, Scope, Send

from packserve.errors import MethodNotAllowedError, PackserveError
from packserve.serve.admission import Admission
from packserve.serve.batching import ClientGone, client_probe
from packserve.serve.http import (
    INTERNAL_ERROR_BODY,
    JSON_HEADERS,
    ClientDisconnect,
    Headers,
    error_parts,
    header_map,
    send_bytes,
)
from packserve.serve.registry import ModelHandle, ModelRegistry

if TYPE_CHECKING:
    from contextvars import Token

    from packserve.serve.batching import Probe

log = logging.getLogger("packserve.serve")

CLOSE: tuple[bytes, bytes] = (b"connection", b"close")
#: a refused request declaring at most this much body keeps its connection on uvicorn
SMALL_BODY_BYTES = 65536


class DisconnectProbe:
    """While entered, a request queued in the handle's batcher, or waiting for an inference
    thread, is dropped if its client left (:mod:`packserve.serve.disconnect`).

    The probe travels in a context variable (``ModelHandle.infer`` keeps its signature); the
    batcher and :func:`~packserve.serve.disconnect.run_watched` only start it for a request
    that stays queued (``WATCH_AFTER_S``), and only once the body has been read, so it never
    competes with body reading for ``receive``. Exiting turns :class:`ClientGone` into
    :class:`ClientDisconnect` (status 499). Models computed inline never queue: no probe.
    """

    __slots__ = ("_handle", "_receive", "_token")

    def __init__(self, handle: ModelHandle, receive: Receive) -> None:
        self._handle = handle
        self._receive = receive
        self._token: Token[Probe | None] | None = None

    def __enter__(self) -> DisconnectProbe:
        handle = self._handle
        if handle.batcher is not None or not handle.cost.inline(1):  # inline calls never queue
            self._token = client_probe.set(self._probe)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._token is not None:
            client_probe.reset(self._token)
        if kind is ClientGone:
            raise ClientDisconnect from None

    async def _probe(self) -> bool:
        return bool((await self._receive())["type"] == "http.disconnect")


class Endpoint:
    """One raw inference endpoint; a protocol implements :meth:`answer` (see module doc).

    ``__call__`` returns the status it sent (499: the client left, nothing was sent).
    """

    #: (path template, batch?) pairs this endpoint serves: the gateway's route table
    routes: ClassVar[tuple[tuple[str, bool], ...]] = ()
    #: error bodies in the V2 shape (``{"error": ...}`` only)
    v2: ClassVar[bool] = False
    internal_error: ClassVar[bytes] = INTERNAL_ERROR_BODY

    def __init__(
        self, registry: ModelRegistry, *, max_body_bytes: int,
        draining: Callable[[], bool] = lambda: False, admission: Admission | None = None,
        keep_small_refusals: bool = False, drain_small_refusals: bool = False,
    ) -> None:
        self.keep_small_refusals = keep_small_refusals
        self.drain_small_refusals = drain_small_refusals
        self.registry = registry
        self.admission = admission or Admission(budget_ms=0)
        self.max_body_bytes = max_body_bytes
        self.draining = draining

    async def answer(
        self, handle: ModelHandle, headers: dict[bytes, bytes], receive: Receive, batch: bool,
        deadline: float | None,
    ) -> tuple[bytes, Headers]:
        """Read, decode, infer (by ``deadline``), encode: the 200 body and its headers."""
        raise NotImplementedError

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send,
        name: str | None, version: str | None, batch: bool,
    ) -> int:
        answering = False
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
                answering = True
                if handle.batcher is None and handle.cost.inline(1):  # never queued: no probe
                    body, headers = await self.answer(
                        handle, request_headers, receive, batch, deadline
                    )
                else:
                    with DisconnectProbe(handle, receive):
                        body, headers = await self.answer(
                            handle, request_headers, receive, batch, deadline
                        )
            finally:
                self.admission.leave(handle)
            status = 200
        except PackserveError as exc:
            status, body, headers = error_parts(exc, v2=self.v2)
            if not answering and CLOSE not in headers:  # refused before its body was read
                keep = await self._skip_body(scope, receive)
                if keep is None:
                    return 499
                if not keep:
                    headers = [*headers, CLOSE]
        except ClientDisconnect:
            return 499
        except Exception:
            log.exception("unhandled error in %s", scope["path"])
            status, body, headers = 500, self.internal_error, JSON_HEADERS
        if self.draining() and CLOSE not in headers:  # keep-alive clients: go elsewhere
            headers = [*headers, CLOSE]
        await send_bytes(send, status, body, headers)
        return status

    async def _skip_body(self, scope: Scope, receive: Receive) -> bool | None:
        """Whether a refusal before the body was read keeps the connection: the request
        declares at most ``SMALL_BODY_BYTES``, not while draining, and, where the engine
        needs it (granian), its body read and discarded first (None: the client left)."""
        if not self.keep_small_refusals or self.draining():
            return False
        for key, value in scope["headers"]:
            if key == b"content-length":
                if not (value.isdigit() and int(value) <= SMALL_BODY_BYTES):
                    return False
                length = int(value)
                break
        else:
            return False  # chunked (or no body declared on a POST): close
        if self.drain_small_refusals and length:
            # until the declared length: granian's closing empty message costs a second wait
            got = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                got += len(message.get("body", b""))
                if got >= length or not message.get("more_body", False):
                    break
        return True


__all__ = ["CLOSE", "SMALL_BODY_BYTES", "DisconnectProbe", "Endpoint"]

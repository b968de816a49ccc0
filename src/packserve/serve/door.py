"""Admission's refusals decided at the door: as soon as a request's headers are parsed, by
the HTTP engine, before any ASGI task exists (issue #15).

Under overload most requests are refused, and on the ASGI path a refusal still pays the
engine's request cycle, a task, the ASGI call chain and two ``send`` messages: ~0.56 of a
served request of a fast inline model, so one core could not shed 2x such a model's capacity
whatever the rule. :class:`Door` answers, for one parsed request head, whether admission
would refuse it and with which bytes; the engine (uvicorn's parser callback,
:mod:`packserve.serve.engines.uvicorn_door`) writes them straight to the socket.

The answer is the ASGI path's answer to the byte (status, JSON body, ``Retry-After``,
content-type, content-length; the engine adds its date and, for a ``Connection: close``
request, ``connection: close``) and is counted the same way (the request counter and
histogram of the route template with status 503, ``packserve_admission_rejected``). Whenever
the ASGI path would do anything else, the door says None and the request takes that path:
draining (``Connection: close`` answers), no or a large body (> ``SMALL_BODY_BYTES``: those
close), chunked, ``Expect``, an API key that does not check out (401), an unknown model or
version (404/503 of its own), an endpoint not keeping refused connections, the access log on.
Requests the door lets through are admitted (and counted) by ``Admission.enter`` as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

from packserve.errors import OverloadedError, PackserveError
from packserve.serve.endpoint import SMALL_BODY_BYTES
from packserve.serve.gateway import RouteTable
from packserve.serve.http import error_parts
from packserve.serve.saturation import Rounds

__all__ = ["Door", "Refusal"]

RawHeaders = Sequence[tuple[bytes, bytes]]
#: (route template, method, status, seconds) -> None: the app's request metrics
Observe = Callable[[str, str, int, float], None]

_CACHE_MAX = 256


class Refusal(NamedTuple):
    """What the engine writes: its status line and default headers (date), ``head`` (header
    lines, each ending CRLF), ``connection: close`` if the request did not keep alive, an
    empty line, ``body``."""

    status: int
    head: bytes
    body: bytes


class Door:
    """``door(method, path, headers) -> Refusal | None`` (module doc)."""

    def __init__(
        self, routes: RouteTable, *, observe: Observe, draining: Callable[[], bool],
        authorized: Callable[[str, RawHeaders], bool] | None,
        pressed: Callable[[], bool] = lambda: True, rounds: Rounds | None = None,
    ) -> None:
        #: could admission refuse anything now? (O(1); while not, the engine skips the door)
        self.pressed = pressed
        #: where the engine records each client's wait between its turns (saturation.Rounds)
        self.rounds = rounds if rounds is not None else Rounds(0.0)
        self.routes = routes
        self.observe = observe
        self.draining = draining
        #: None: no API key is needed anywhere (the engine may pass no headers)
        self.authorized = authorized
        self._canned: dict[tuple[bool, str], Refusal] = {}

    @property
    def keyed(self) -> bool:
        """Does the answer depend on the request's headers beyond its body's size (an API key)?"""
        return self.authorized is not None

    def __call__(
        self, method: str, path: str, headers: RawHeaders, *, small: bool | None = None,
    ) -> Refusal | None:
        """``small``: the engine has already checked the body is small and plain
        (:func:`_small_body`); ``headers`` may then be empty unless :attr:`keyed`."""
        t0 = time.perf_counter()
        if method != "POST" or self.draining():
            return None
        hit = self.routes.match(path)
        if hit is None:
            return None
        route, name, version = hit
        endpoint = route.endpoint
        try:
            handle = endpoint.registry.resolve(name, version)
        except PackserveError:
            return None  # the ASGI path says why (404, 503 not ready)
        admission = endpoint.admission
        verdict = admission.door(handle, time.monotonic())
        if verdict is None:  # the common case: admitted on the ASGI path
            return None
        if not (endpoint.keep_small_refusals and not endpoint.drain_small_refusals
                and (_small_body(headers) if small is None else small)
                and (self.authorized is None or self.authorized(path, headers))):
            return None
        reason, exc = verdict
        admission.refused(handle, reason)
        refusal = self._refusal(exc, endpoint.v2)
        self.observe(route.template, "POST", 503, time.perf_counter() - t0)
        return refusal

    def _refusal(self, exc: OverloadedError, v2: bool) -> Refusal:
        """The same object for the same answer: the engine caches its bytes by identity."""
        key = (v2, exc.message)
        canned = self._canned.get(key)
        if canned is None:
            status, body, headers = error_parts(exc, v2=v2)
            assert status == 503
            lines = [*headers, (b"content-length", str(len(body)).encode())]
            canned = Refusal(503, b"".join(k + b": " + v + b"\r\n" for k, v in lines), body)
            if len(self._canned) >= _CACHE_MAX:  # messages carry counts: keep it bounded
                self._canned.clear()
            self._canned[key] = canned
        return canned


def _small_body(headers: RawHeaders) -> bool:
    """A declared body of at most ``SMALL_BODY_BYTES``, not chunked, no ``Expect``: a refusal
    the ASGI path answers keeping the connection (the engine skips the unread body)."""
    length = -1
    for key, value in headers:
        if key == b"content-length":
            if length >= 0 or not value.isdigit():
                return False
            length = int(value)
        elif key in (b"transfer-encoding", b"expect"):
            return False
    return 0 <= length <= SMALL_BODY_BYTES

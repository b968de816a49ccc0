"""The gateway's parts: one route table for the raw endpoints, and the small steps the app's
``__call__`` runs around every request (see :class:`packserve.serve.app.PackserveApp`).

Routing is exact and regex-free (it runs on every request): a path without parameters is one
dict lookup; a templated one is split once and checked against the few templates with its
segment count and first segment.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass

import orjson
from starlette.types import Message, Receive, Scope, Send

from packserve.errors import PackserveError, PayloadTooLargeError
from packserve.serve.endpoint import CLOSE, Endpoint
from packserve.serve.http import header_map, limited_receive
from packserve.serve.state import ServerState

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True, slots=True)
class Route:
    """One path template served by a raw endpoint (``batch``: the ``/batch`` variant)."""

    template: str
    endpoint: Endpoint
    batch: bool = False


Hit = tuple[Route, str | None, str | None]
"""(route, model name or None = the default model, version or None = the newest ready one)"""


@dataclass(frozen=True, slots=True)
class _Pattern:
    route: Route
    literals: tuple[tuple[int, str], ...]  # (segment index, text) that must match
    params: tuple[int, ...]  # segment indexes that must be non-empty
    name_at: int | None
    version_at: int | None


class RouteTable:
    """Every path a raw endpoint serves, from each endpoint's ``routes``: one table."""

    def __init__(self, endpoints: Iterable[Endpoint]) -> None:
        self._exact: dict[str, Hit] = {}
        self._patterns: dict[tuple[int, str], list[_Pattern]] = {}
        for endpoint in endpoints:
            for template, batch in endpoint.routes:
                self.add(Route(template, endpoint, batch))

    def add(self, route: Route) -> None:
        parts = route.template.split("/")
        if "{" not in route.template:
            self._exact[route.template] = (route, None, None)
            return
        literals = tuple((i, p) for i, p in enumerate(parts) if i and not p.startswith("{"))
        params = tuple(i for i, p in enumerate(parts) if p.startswith("{"))
        pattern = _Pattern(
            route, literals, params,
            parts.index("{name}") if "{name}" in parts else None,
            parts.index("{version}") if "{version}" in parts else None,
        )
        self._patterns.setdefault((len(parts), parts[1]), []).append(pattern)

    def match(self, path: str) -> Hit | None:
        hit = self._exact.get(path)
        if hit is not None:
            return hit
        parts = path.split("/")
        if len(parts) < 2:
            return None
        for p in self._patterns.get((len(parts), parts[1]), ()):
            if all(parts[i] == text for i, text in p.literals) and all(parts[i] for i in p.params):
                return (
                    p.route,
                    None if p.name_at is None else parts[p.name_at],
                    None if p.version_at is None else parts[p.version_at],
                )
        return None


class TrackedSend:
    """The ``send`` of everything but the raw endpoints (they send themselves): remembers the
    status for metrics and adds ``Connection: close`` once a drain began (keep-alive clients
    go elsewhere) or when the request was refused before its body was read (``close``: see
    :mod:`packserve.serve.endpoint`)."""

    __slots__ = ("_send", "_state", "close", "status")

    def __init__(self, send: Send, state: ServerState) -> None:
        self._send, self._state, self.status, self.close = send, state, 0, False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            headers = message.get("headers", ())
            if (self._state.draining or self.close) and CLOSE not in headers:
                message = {**message, "headers": [*headers, CLOSE]}
        await self._send(message)


def body_limit(scope: Scope, receive: Receive, limit: int) -> tuple[Receive, PackserveError | None]:
    """Cap a body for the FastAPI routes: refuse a declared oversize at once, else count."""
    if scope["method"] not in BODY_METHODS:
        return receive, None
    declared = header_map(scope).get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return receive, PayloadTooLargeError(
            f"body of {int(declared)} bytes exceeds the limit of {limit} bytes"
        )
    return limited_receive(receive, limit), None


def log_access(scope: Scope, route: str, status: int, seconds: float) -> None:
    """One JSON line per request on stderr (``--access-log``)."""
    client = scope.get("client")
    line = orjson.dumps(
        {
            "ts": round(time.time(), 3),
            "method": scope["method"],
            "path": scope["path"],
            "route": route,
            "status": status,
            "ms": round(seconds * 1000, 3),
            "client": client[0] if client else None,
        }
    )
    sys.stderr.write(line.decode() + "\n")


__all__ = ["BODY_METHODS", "Hit", "Route", "RouteTable", "TrackedSend", "body_limit", "log_access"]

"""uvicorn's httptools protocol with packserve's door (:mod:`packserve.serve.door`).

A refusal decided in the parser's ``on_headers_complete`` is written straight to the
transport: no ``RequestResponseCycle``, no ``asyncio.Event``, no task, no ASGI messages. The
request's body, still to be parsed, is skipped by uvicorn's own callbacks (``on_body`` and
``on_message_complete`` return when the cycle's response is complete: a finished stand-in
cycle is left in place), then the connection continues as after any answer: the keep-alive
timer is armed, or the connection is closed if the request did not keep alive.

The protocol takes the normal path (does nothing special) whenever in doubt: a previous
request on the connection not answered yet (pipelining: answers keep their order), a
client not reading its answers (the transport's buffer over its high-water mark: answering
pipelined requests at once would grow it without bound), an upgrade, HTTP/1.0,
``Expect: 100-continue``, and whatever the door itself declines. Any error in the door also
means the normal path (httptools would turn it into a 400).
"""

from __future__ import annotations

import logging
import urllib.parse
from typing import Any, cast

import httptools
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from packserve.serve.door import Door

__all__ = ["door_protocol"]

log = logging.getLogger("packserve.serve")

CRLF = b"\r\n"
CLOSE_LINE = b"connection: close\r\n"
_warned = False  # the door's first failure is logged, not every one


class _NoEvent:
    __slots__ = ()

    def set(self) -> None:
        pass


class _Answered:
    """Stands for a request the door answered: complete, so uvicorn skips its body, and
    the next request on the connection starts at once."""

    __slots__ = ()
    response_complete = True
    disconnected = False
    keep_alive = True
    message_event = _NoEvent()


ANSWERED = cast(RequestResponseCycle, _Answered())


class DoorProtocol(HttpToolsProtocol):
    """httptools protocol whose ``on_headers_complete`` asks the app's door first."""

    door: Door  # set by door_protocol()

    def on_headers_complete(self) -> None:
        self._unset_keepalive_if_required()  # a door answer armed it: a request is starting
        try:
            answered = self._at_the_door()
        except UnicodeDecodeError:  # a non-ASCII path: the normal path answers (400)
            answered = False
        except Exception:  # never a 400 for the door's sake: the normal path answers
            global _warned
            if not _warned:
                _warned = True
                log.exception("admission door failed; requests take the normal path")
            answered = False
        if not answered:
            super().on_headers_complete()

    def _at_the_door(self) -> bool:
        if not self.door.pressed():  # nothing near a limit: no look (admission.pressed)
            return False
        parser = self.parser
        if parser.get_method() != b"POST":
            return False
        cycle = self.cycle
        if (cycle is not None and not cycle.response_complete) or self.pipeline:
            return False  # pipelined behind a request in progress: answers keep their order
        if self.flow.write_paused:  # a client not reading its answers: uvicorn's flow control
            return False  # (the normal path waits for the buffer, pipelined requests queue)
        if self.expect_100_continue or parser.should_upgrade() or parser.get_http_version() != "1.1":
            return False
        url = self.url
        if url[:1] == b"/" and b"?" not in url and b"%" not in url and b"#" not in url:
            path = url.decode("ascii")
        else:
            path = httptools.parse_url(url).path.decode("ascii")
            if "%" in path:
                path = urllib.parse.unquote(path)
        refusal = self.door("POST", self.root_path + path, self.headers)
        if refusal is None:
            return False
        keep_alive = parser.should_keep_alive()
        parts = [STATUS_LINE[refusal.status]]
        for name, value in self.server_state.default_headers:
            parts += (name, b": ", value, CRLF)
        parts.append(refusal.head)
        if not keep_alive:
            parts.append(CLOSE_LINE)
        parts += (CRLF, refusal.body)
        self.scope["method"] = "POST"  # what uvicorn's upgrade and logging paths read
        self.cycle = ANSWERED
        transport = self.transport
        transport.write(b"".join(parts))
        # what uvicorn's on_response_complete does after an answer
        self.server_state.total_requests += 1
        if not keep_alive:
            transport.close()
        elif not transport.is_closing():
            self.flow.resume_reading()
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )
        return True


def door_protocol(door: Door) -> type[Any]:
    """uvicorn's ``Config(http=...)``: the httptools protocol answering refusals at ``door``."""
    return type("PackserveDoorProtocol", (DoorProtocol,), {"door": door})

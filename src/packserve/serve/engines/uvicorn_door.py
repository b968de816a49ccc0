"""uvicorn's httptools protocol with packserve's door (:mod:`packserve.serve.door`).

Two places ask the door, both only while admission could refuse anything
(``Admission.pressed``, O(1)); otherwise every request takes uvicorn's own path untouched.

* **Before the parser** (``data_received``): a read that is exactly one small, plain
  ``POST`` (:func:`plain_post`: HTTP/1.1, one ``Content-Length``, the whole body in the read,
  no ``Transfer-Encoding``, ``Expect``, ``Upgrade`` or ``Connection`` header, a path without
  query or escapes), on a connection whose parser is between messages and has no answer
  pending. A refusal there never feeds the parser: no per-header callbacks, no ASGI scope, no
  keep-alive timer cancelled and armed again (one timer per connection is pushed back
  instead, :meth:`DoorProtocol.timeout_keep_alive_handler`). Under overload, with most
  requests refused, this is what decides how much one core can shed (issue #15: 20 µs a
  refusal through the parser, measured against the floor of ~4.5 µs for a bare protocol
  answering canned bytes).
* **In the parser's** ``on_headers_complete``, for everything else the door may answer
  (a request split over reads, headers :func:`plain_post` declines). The request's body,
  still to be parsed, is skipped by uvicorn's own callbacks (``on_body`` and
  ``on_message_complete`` return when the cycle's response is complete: a finished stand-in
  cycle is left in place).

A refusal is written straight to the transport (no ``RequestResponseCycle``, no task, no ASGI
messages), then the connection continues as after any answer: kept alive, or closed if the
request did not keep alive. The protocol takes the normal path whenever in doubt: a previous
request on the connection not answered yet (pipelining: answers keep their order), a client
not reading its answers (the transport's buffer over its high-water mark), an upgrade,
HTTP/1.0, ``Expect: 100-continue``, whatever the door itself declines, and any error in the
door (httptools would turn it into a 400).
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from time import monotonic
from typing import Any, NamedTuple, cast

import httptools
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from packserve.serve.door import Door, RawHeaders, Refusal
from packserve.serve.endpoint import SMALL_BODY_BYTES

__all__ = ["PlainPost", "door_protocol", "plain_post"]

log = logging.getLogger("packserve.serve")

CRLF = b"\r\n"
CLOSE_LINE = b"connection: close\r\n"
#: request line and header lines (RFC 9112: a token, a colon, a value without CR/LF), then
#: the empty line; the target an absolute path without query, escapes or fragment
_PLAIN = re.compile(
    rb"POST (/[^ ?%#\x00-\x20\x7f-\xff]*) HTTP/1\.1\r\n"
    rb"((?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[^\r\n]*\r\n)*)\r\n"
)
#: the header lines that frame a request or change what follows it
_FRAMING = re.compile(rb"\n(content-length|transfer-encoding|expect|upgrade|connection):")
_LENGTH_ONLY = [b"content-length"]
_LENGTH = re.compile(rb"\ncontent-length:[ \t]*([0-9]{1,6})[ \t]*\r")
_warned = False  # the door's first failure is logged, not every one


class PlainPost(NamedTuple):
    """What :func:`plain_post` read: the path, and the header lines as sent (``raw``) and
    lower-cased (``head``): LF, then the lines, each ending CRLF."""

    path: str
    head: bytes
    raw: bytes


def plain_post(data: bytes) -> PlainPost | None:
    """``data`` as one whole plain small ``POST`` (module doc), or None for anything else.

    Conservative by design: None sends the read to httptools, which parses it as always, so
    a request this declines costs one regular expression and nothing else. Header lines must
    each be a token, a colon and a value (a malformed one goes to the parser: 400).
    """
    m = _PLAIN.match(data)
    if m is None:
        return None
    raw = b"\n" + m.group(2)
    head = raw.lower()
    if _FRAMING.findall(head) != _LENGTH_ONLY:  # one length, nothing else that frames it
        return None
    n = _LENGTH.search(head)
    if n is None:
        return None
    length = int(n.group(1))
    if length > SMALL_BODY_BYTES or len(data) != m.end() + length:
        return None  # not all of it here, or more than one request (pipelined)
    return PlainPost(m.group(1).decode("ascii"), head, raw)


def header_pairs(raw: bytes) -> RawHeaders:
    """:attr:`PlainPost.raw` as (name, value) pairs, as uvicorn's parser gives them: names
    lower-cased, values as sent (an API key is compared as sent)."""
    pairs = []
    for one in raw[1:-2].split(CRLF):
        name, _, value = one.partition(b":")
        pairs.append((name.lower(), value.strip(b" \t")))
    return pairs


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

#: the last answer's bytes: (refusal, the server's default headers list) -> bytes; uvicorn
#: rebuilds that list (its date header) once a second, so this is rebuilt as often
_blob: list[Any] = [None, None, b""]


class _Conn:
    """The door's state of one connection."""

    __slots__ = ("arrived", "between", "pressed", "seen", "turn")

    def __init__(self) -> None:
        self.between = True  # the parser is between messages: no part of a request fed to it
        self.seen = 0.0  # loop time of the last request answered before the parser (keep-alive)
        self.arrived = 0.0  # when the connection's last POST started (time.monotonic)
        self.turn = 0  # Rounds.count then
        self.pressed = False  # door.pressed() at the start of the read being parsed


class DoorProtocol(HttpToolsProtocol):
    """httptools protocol that asks the app's door before and inside the parser."""

    door: Door  # set by door_protocol()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # the door's state of the connection: one slotted object set here, not attributes
        # added to uvicorn's protocol as requests come (each read touches several of them)
        self._conn = _Conn()

    def on_message_begin(self) -> None:
        self._conn.between = False
        HttpToolsProtocol.on_message_begin(self)

    def on_message_complete(self) -> None:
        self._conn.between = True
        HttpToolsProtocol.on_message_complete(self)

    def data_received(self, data: bytes) -> None:
        conn = self._conn
        door = self.door
        # asked once a read: on_headers_complete, run by the parser within this call, reuses it
        pressed = conn.pressed = door.pressed()
        if conn.between and data[:5] == b"POST ":  # a prediction starts (or another POST)
            now = monotonic()
            rounds = door.rounds
            rounds.count += 1
            if conn.arrived:  # how long this client's turn took to come round (Rounds)
                rounds.add(now - conn.arrived, rounds.count - conn.turn)
            conn.arrived = now
            conn.turn = rounds.count
            if pressed and self._before(data):
                return
        super().data_received(data)

    def _before(self, data: bytes) -> bool:
        """The door before the parser (module doc); True if it answered."""
        cycle = self.cycle
        if (cycle is not None and not cycle.response_complete) or self.pipeline:
            return False
        if self.flow.write_paused:
            return False
        post = plain_post(data)
        if post is None:
            return False
        door = self.door
        headers = header_pairs(post.raw) if door.keyed else ()
        try:
            refusal = door("POST", self.root_path + post.path, headers, small=True)
        except Exception:
            self._door_failed()
            return False
        if refusal is None:
            return False
        self._conn.seen = self.loop.time()
        if self.timeout_keep_alive_task is None:  # armed once, then pushed back (below)
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )
        self._write(refusal, True)
        return True

    def timeout_keep_alive_handler(self) -> None:
        # requests answered before the parser do not re-arm the timer: push it back instead
        left = self._conn.seen + self.timeout_keep_alive - self.loop.time()
        if left > 0 and not self.transport.is_closing():
            self.timeout_keep_alive_task = self.loop.call_later(left, self.timeout_keep_alive_handler)
            return
        super().timeout_keep_alive_handler()

    def on_headers_complete(self) -> None:
        self._unset_keepalive_if_required()  # a door answer armed it: a request is starting
        try:
            answered = self._at_the_door()
        except UnicodeDecodeError:  # a non-ASCII path: the normal path answers (400)
            answered = False
        except Exception:  # never a 400 for the door's sake: the normal path answers
            self._door_failed()
            answered = False
        if not answered:
            super().on_headers_complete()

    @staticmethod
    def _door_failed() -> None:
        global _warned
        if not _warned:
            _warned = True
            log.exception("admission door failed; requests take the normal path")

    def _at_the_door(self) -> bool:
        if not self._conn.pressed:  # nothing near a limit: no look (admission.pressed)
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
        self.scope["method"] = "POST"  # what uvicorn's upgrade and logging paths read
        self.cycle = ANSWERED
        keep_alive = parser.should_keep_alive()
        self._write(refusal, keep_alive)
        if keep_alive and not self.transport.is_closing():
            self.flow.resume_reading()
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )
        return True

    def _write(self, refusal: Refusal, keep_alive: bool) -> None:
        defaults = self.server_state.default_headers
        if keep_alive and _blob[0] is refusal and _blob[1] is defaults:
            blob = _blob[2]
        else:
            parts = [STATUS_LINE[refusal.status]]
            for name, value in defaults:
                parts += (name, b": ", value, CRLF)
            parts.append(refusal.head)
            if not keep_alive:
                parts.append(CLOSE_LINE)
            parts += (CRLF, refusal.body)
            blob = b"".join(parts)
            if keep_alive:
                _blob[:] = (refusal, defaults, blob)
        self.transport.write(blob)
        # what uvicorn's on_response_complete does after an answer
        self.server_state.total_requests += 1
        if not keep_alive:
            self.transport.close()


def door_protocol(door: Door) -> type[Any]:
    """uvicorn's ``Config(http=...)``: the httptools protocol answering refusals at ``door``."""
    return type("PackserveDoorProtocol", (DoorProtocol,), {"door": door})

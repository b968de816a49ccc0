"""Opcode handlers for plain values: stack marks, numbers, strings, bytes, tuples, lists, dicts.

Each handler gets the :class:`~packserve.scan.pickle.machine.WalkState` and returns ``True`` only for
STOP. :data:`DISPATCH` maps an opcode byte to its handler; :mod:`.objects` adds the rest.
"""

from __future__ import annotations

import codecs
import struct
from collections.abc import Callable
from typing import Any

from packserve.scan.pickle.machine import WalkState
from packserve.scan.pickle.values import Big, DictV, Malformed, Opaque
from packserve.scan.report import Severity

H = Callable[[WalkState], "bool | None"]
DISPATCH: dict[int, H] = {}


def op(*codes: bytes) -> Callable[[H], H]:
    def deco(fn: H) -> H:
        for c in codes:
            DISPATCH[c[0]] = fn
        return fn

    return deco


_u1 = struct.Struct("<B").unpack
_u2 = struct.Struct("<H").unpack
_i4 = struct.Struct("<i").unpack
_u4 = struct.Struct("<I").unpack
_u8 = struct.Struct("<Q").unpack
_f8 = struct.Struct(">d").unpack


@op(b"(")
def _mark(w: WalkState) -> None:
    w.metastack.append(w.stack)
    w.stack = []


@op(b"0")
def _pop(w: WalkState) -> None:
    if w.stack:
        w.stack.pop()
    else:
        w.pop_mark()


@op(b"1")
def _pop_mark(w: WalkState) -> None:
    w.pop_mark()


@op(b"2")
def _dup(w: WalkState) -> None:
    w.push(w.top())


@op(b"F")
def _float(w: WalkState) -> None:
    data = w.line()
    try:
        w.push(float(data))
    except ValueError:
        _lenient(w, "FLOAT")


def _lenient(w: WalkState, what: str) -> None:
    """An argument we cannot parse but some unpickler might: note it and keep walking.

    Stopping early is the only way a walker can miss a global, so the walker only stops where
    every CPython unpickler certainly stops.
    """
    w.issue(Severity.MEDIUM, "malformed", f"unparseable {what} argument")
    w.push(Opaque("number"))


@op(b"I")
def _int(w: WalkState) -> None:
    data = w.line()
    if data == b"00":
        w.push(False)
    elif data == b"01":
        w.push(True)
    else:
        try:
            w.push(int(data, 0))
        except ValueError:
            _lenient(w, "INT")


@op(b"L")
def _long(w: WalkState) -> None:
    data = w.line()
    if data.endswith(b"L"):
        data = data[:-1]
    try:
        w.push(int(data, 0))
    except ValueError:
        _lenient(w, "LONG")


@op(b"J")
def _binint(w: WalkState) -> None:
    w.push(_i4(w.need(4))[0])


@op(b"K")
def _binint1(w: WalkState) -> None:
    w.push(w.need(1)[0])


@op(b"M")
def _binint2(w: WalkState) -> None:
    w.push(_u2(w.need(2))[0])


@op(b"\x8a")
def _long1(w: WalkState) -> None:
    n = w.need(1)[0]
    w.push(int.from_bytes(w.need(n), "little", signed=True))


@op(b"\x8b")
def _long4(w: WalkState) -> None:
    (n,) = _i4(w.need(4))
    if n < 0:
        raise Malformed("LONG4 with a negative length")
    if n > 1 << 16:
        w.payload(n, "long")
        w.push(Opaque("long"))
    else:
        w.push(int.from_bytes(w.need(n), "little", signed=True))


@op(b"G")
def _binfloat(w: WalkState) -> None:
    w.push(_f8(w.need(8))[0])


@op(b"N")
def _none(w: WalkState) -> None:
    w.push(None)


@op(b"\x88")
def _true(w: WalkState) -> None:
    w.push(True)


@op(b"\x89")
def _false(w: WalkState) -> None:
    w.push(False)


def _decode_str(w: WalkState, data: Any) -> Any:
    # Protocol-0/1 byte strings decode to str with the default encoding: they can feed STACK_GLOBAL.
    if isinstance(data, bytes):
        try:
            return data.decode("ascii")
        except UnicodeDecodeError:
            return data
    return data


@op(b"S")
def _string(w: WalkState) -> None:
    data = w.line()
    if len(data) >= 2 and data[0] == data[-1] and data[:1] in (b'"', b"'"):
        data = data[1:-1]
    else:
        raise Malformed("STRING argument is not quoted")
    w.push(w.text_value(_decode_str(w, codecs.escape_decode(data)[0]), "bytes"))


@op(b"T")
def _binstring(w: WalkState) -> None:
    (n,) = _i4(w.need(4))
    w.push(_decode_str(w, w.payload(n, "bytes")))


@op(b"U")
def _short_binstring(w: WalkState) -> None:
    w.push(_decode_str(w, w.need(w.need(1)[0])))


@op(b"V")
def _unicode(w: WalkState) -> None:
    w.push(w.text_value(str(w.line(), "raw-unicode-escape"), "str"))


def _text(w: WalkState, n: int) -> Any:
    data = w.payload(n, "str")
    if isinstance(data, Big):
        return data
    return str(data, "utf-8", "surrogatepass")


@op(b"X")
def _binunicode(w: WalkState) -> None:
    w.push(_text(w, _u4(w.need(4))[0]))


@op(b"\x8c")
def _short_binunicode(w: WalkState) -> None:
    w.push(_text(w, w.need(1)[0]))


@op(b"\x8d")
def _binunicode8(w: WalkState) -> None:
    w.push(_text(w, _u8(w.need(8))[0]))


def _bytes(w: WalkState, n: int, kind: str = "bytes") -> None:
    data = w.payload(n, kind)
    w.note_bytes(data)
    w.push(data)


@op(b"B")
def _binbytes(w: WalkState) -> None:
    _bytes(w, _u4(w.need(4))[0])


@op(b"C")
def _short_binbytes(w: WalkState) -> None:
    _bytes(w, w.need(1)[0])


@op(b"\x8e")
def _binbytes8(w: WalkState) -> None:
    _bytes(w, _u8(w.need(8))[0])


@op(b"\x96")
def _bytearray8(w: WalkState) -> None:
    _bytes(w, _u8(w.need(8))[0], "bytearray")


@op(b"\x97", b"\x98")
def _buffers(w: WalkState) -> None:
    w.issue(Severity.MEDIUM, "out-of-band", "out-of-band buffer: content cannot be verified")
    if w.code == 0x98:
        w.top()
    else:
        w.push(Opaque("buffer"))


@op(b")")
def _empty_tuple(w: WalkState) -> None:
    w.push(())


@op(b"t")
def _tuple(w: WalkState) -> None:
    w.push(tuple(w.pop_mark()))


@op(b"\x85")
def _tuple1(w: WalkState) -> None:
    w.push((w.pop(),))


@op(b"\x86")
def _tuple2(w: WalkState) -> None:
    b = w.pop()
    a = w.pop()
    w.push((a, b))


@op(b"\x87")
def _tuple3(w: WalkState) -> None:
    c = w.pop()
    b = w.pop()
    a = w.pop()
    w.push((a, b, c))


@op(b"]")
def _empty_list(w: WalkState) -> None:
    w.push([])


@op(b"l")
def _list(w: WalkState) -> None:
    w.push(list(w.pop_mark()))


@op(b"}")
def _empty_dict(w: WalkState) -> None:
    w.push(DictV())


@op(b"d")
def _dict(w: WalkState) -> None:
    items = w.pop_mark()
    if len(items) % 2:
        raise Malformed("DICT with an odd number of items")
    w.push(DictV(list(zip(items[::2], items[1::2], strict=True))))


@op(b"\x8f")
def _empty_set(w: WalkState) -> None:
    w.push(Opaque("set", []))


@op(b"\x91")
def _frozenset(w: WalkState) -> None:
    w.push(Opaque("frozenset", w.pop_mark()))


__all__ = ["DISPATCH", "H", "op"]

"""Static pickle walker: every opcode of protocols 0-5, with its own stack and memo.

Nothing named in the stream is imported, resolved or called. The walker simulates only what it
needs to recover every global a real unpickler would resolve (GLOBAL, INST, STACK_GLOBAL fed
from strings or the memo, EXT codes) and the objects built from them (REDUCE, NEWOBJ,
NEWOBJ_EX, OBJ, INST, BUILD). Structural tricks (memo keys never stored, non-string
STACK_GLOBAL operands, FRAME inconsistencies, unknown opcodes, truncation) become *issues*:
the caller turns them into findings, so malformed input fails closed.
"""

from __future__ import annotations

import codecs
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from packserve.scan.report import Severity
from packserve.scan.stream import Reader

SMALL_BYTES = 1 << 20  # byte strings longer than this are skipped, not read
MAX_LINE = 1 << 16
PICKLE_LIKE_OPS = 256  # this many valid opcodes in a row: a pickle, whatever else it is
MAX_VALUES = 1 << 22  # values built, not bytes: bounds memory (~300 MB) on hostile streams


@dataclass(frozen=True)
class GlobalRef:
    """A global the stream names. ``offset`` is where the naming opcode starts."""

    module: str
    name: str
    offset: int
    opcode: str


@dataclass
class Obj:
    """Result of calling ``func`` (a :class:`GlobalRef` or anything else) with ``args``."""

    func: Any
    args: Any
    offset: int
    state: Any = None


@dataclass(frozen=True)
class Big:
    """A byte/str payload that was skipped rather than read."""

    kind: str
    length: int
    offset: int


@dataclass(frozen=True)
class Opaque:
    """A value the walker does not model (persistent ids, extension codes, buffers)."""

    what: str
    value: Any = None


@dataclass
class DictV:
    """A dict built by the stream, kept as pairs (keys need not be hashable)."""

    items: list[tuple[Any, Any]] = field(default_factory=list)

    def get(self, key: str) -> Any:
        for k, v in self.items:
            if k == key:
                return v
        return None


@dataclass(frozen=True)
class Issue:
    offset: int
    severity: Severity
    rule: str
    reason: str
    module: str | None = None
    name: str | None = None


@dataclass
class WalkResult:
    """What one pickle stream references and how it ended."""

    start: int
    globals: list[GlobalRef] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    persids: list[Any] = field(default_factory=list)
    builds: list[Obj] = field(default_factory=list)
    nested: list[tuple[int, bytes]] = field(default_factory=list)  # (offset, bytes that look like a pickle)
    value: Any = None  # top of stack at STOP
    end: int | None = None  # offset just after STOP; None if STOP was never reached
    protocol: int | None = None
    ops: int = 0
    error: str | None = None  # why the walk stopped early

    @property
    def ok(self) -> bool:
        return self.end is not None and self.error is None

    @property
    def looks_like_pickle(self) -> bool:
        """Could a real unpickler have resolved anything before failing?

        Data that is not a pickle fails on its first opcodes without naming any importable
        global; such data cannot run code when unpickled.
        """
        from packserve.scan.policy import plausible_module

        if self.ok or self.protocol is not None or self.ops >= PICKLE_LIKE_OPS:
            return True
        if any(i.rule in ("extension-code", "resource-limit", "frame") for i in self.issues):
            return True
        return any(plausible_module(g.module) for g in self.globals)


class Malformed(Exception):
    """The stream stops being a valid pickle here (a real unpickler raises)."""

    def __init__(self, reason: str, rule: str = "malformed") -> None:
        super().__init__(reason)
        self.reason = reason
        self.rule = rule


class _Mark:
    pass


class Walker:
    """Walk one pickle from the reader's current position to STOP (or the first error).

    ``on_build(walker, obj)`` is called after a BUILD: container formats that interleave raw
    data with opcodes (joblib's NumpyArrayWrapper) use it to skip that data.
    """

    def __init__(
        self,
        reader: Reader,
        *,
        on_build: Callable[[Walker, Obj], None] | None = None,
    ) -> None:
        self.r = reader
        self.on_build = on_build
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.frame_end: int | None = None
        self.result = WalkResult(start=reader.pos)
        self.op_offset = 0
        self.code = 0
        self.values = 0

    # --- helpers ---------------------------------------------------------------------------

    def issue(self, severity: Severity, rule: str, reason: str, **kw: str | None) -> None:
        self.result.issues.append(Issue(self.op_offset, severity, rule, reason, **kw))

    def need(self, n: int) -> bytes:
        r = self.r
        i = r.i
        j = i + n
        if j <= len(r.buf):  # fast path: already buffered
            r.i = j
            return r.buf[i:j]
        data = r.read(n)
        if len(data) < n:
            raise Malformed("truncated: the stream ends inside an opcode argument", "truncated")
        return data

    def line(self) -> bytes:
        data = self.r.readline(MAX_LINE)
        if data is None:
            raise Malformed("truncated: missing newline after a text argument", "truncated")
        return data[:-1]

    def push(self, v: Any) -> None:
        self.values += 1
        if self.values > MAX_VALUES:
            raise Malformed("stream builds an unreasonable number of values", "resource-limit")
        self.stack.append(v)

    def pop(self) -> Any:
        if not self.stack:
            raise Malformed("stack underflow")
        return self.stack.pop()

    def top(self) -> Any:
        if not self.stack:
            raise Malformed("stack underflow")
        return self.stack[-1]

    def pop_mark(self) -> list[Any]:
        if not self.metastack:
            raise Malformed("MARK expected but missing")
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def payload(self, n: int, kind: str) -> Any:
        """Read a length-prefixed payload, or skip it if it is big."""
        if n < 0:
            raise Malformed("negative length")
        if n <= 4096:
            return self.need(n)
        rem = self.r.remaining()
        if rem is not None and n > rem:
            raise Malformed("truncated: a length runs past the end of the data", "truncated")
        if n > SMALL_BYTES:
            off = self.r.pos
            if self.r.skip(n) < n:
                raise Malformed("truncated: a length runs past the end of the data", "truncated")
            return Big(kind, n, off)
        return self.need(n)

    def add_global(self, module: str, name: str, opcode: str) -> GlobalRef:
        g = GlobalRef(module, name, self.op_offset, opcode)
        self.result.globals.append(g)
        return g

    def called(self, func: Any, what: str) -> None:
        """Record a call target that is not a global (a computed callable)."""
        if not isinstance(func, GlobalRef):
            self.issue(
                Severity.HIGH,
                "computed-call",
                f"{what} calls a value that is not a plain global "
                f"({type(func).__name__}): attribute or getter chains",
            )

    def note_bytes(self, data: Any) -> None:
        """Remember byte strings that are themselves pickles (nested unpickling)."""
        if (
            isinstance(data, bytes)
            and len(data) >= 4
            and data[0] == 0x80
            and data[1] <= 5
            and data.rstrip()[-1:] == b"."
        ):
            self.result.nested.append((self.op_offset, data))

    # --- main loop -------------------------------------------------------------------------

    def walk(self) -> WalkResult:
        res = self.result
        table = _DISPATCH
        r = self.r
        try:
            while True:
                i = r.i
                buf = r.buf
                if i < len(buf):  # fast path: the opcode byte is buffered
                    self.op_offset = r.base + i
                    code = buf[i]
                    r.i = i + 1
                else:
                    self.op_offset = r.pos
                    code = r.read_byte()
                if self.frame_end is not None:
                    if self.op_offset == self.frame_end:
                        self.frame_end = None
                    elif self.op_offset > self.frame_end:
                        self.issue(
                            Severity.HIGH,
                            "frame",
                            "an opcode straddles a FRAME boundary (unpicklers disagree)",
                        )
                        self.frame_end = None
                if code < 0:
                    raise Malformed("truncated: the stream ends before STOP", "truncated")
                self.code = code
                handler = table.get(code)
                if handler is None:
                    raise Malformed(f"unknown opcode 0x{code:02x}", "unknown-opcode")
                res.ops += 1
                if handler(self):
                    res.end = self.r.pos
                    res.value = self.stack[-1] if self.stack else None
                    if self.frame_end is not None and self.frame_end != res.end:
                        self.issue(Severity.HIGH, "frame", "STOP inside a FRAME that runs on")
                    if not self.stack:
                        raise Malformed("STOP with an empty stack")
                    return res
        except Malformed as exc:
            res.error = exc.reason
            self.issue(Severity.HIGH, exc.rule, exc.reason)
        except (ValueError, OverflowError, UnicodeDecodeError, struct.error) as exc:
            res.error = f"malformed argument: {type(exc).__name__}"
            self.issue(Severity.HIGH, "malformed", res.error)
        return res


# --- opcode handlers: return True only for STOP ---------------------------------------------

H = Callable[[Walker], bool | None]
_DISPATCH: dict[int, H] = {}


def op(*codes: bytes) -> Callable[[H], H]:
    def deco(fn: H) -> H:
        for c in codes:
            _DISPATCH[c[0]] = fn
        return fn

    return deco


_u1 = struct.Struct("<B").unpack
_u2 = struct.Struct("<H").unpack
_i4 = struct.Struct("<i").unpack
_u4 = struct.Struct("<I").unpack
_u8 = struct.Struct("<Q").unpack
_f8 = struct.Struct(">d").unpack


@op(b".")
def _stop(w: Walker) -> bool:
    return True


@op(b"\x80")
def _proto(w: Walker) -> None:
    proto = w.need(1)[0]
    if w.result.protocol is None:
        w.result.protocol = proto  # it claims to be a pickle: judged as one from here on
    if proto > 5:
        raise Malformed(f"unsupported pickle protocol {proto}", "protocol")
    if w.op_offset != w.result.start:
        w.issue(Severity.MEDIUM, "protocol", "PROTO opcode not at the start of the stream")


@op(b"\x95")
def _frame(w: Walker) -> None:
    (n,) = _u8(w.need(8))
    if w.frame_end is not None and w.op_offset < w.frame_end:
        w.issue(Severity.HIGH, "frame", "FRAME opcode inside another frame")
    rem = w.r.remaining()
    if rem is not None and n > rem:
        # pickle.py's unframer keeps going with the short frame (the C one stops): walk on.
        w.issue(Severity.HIGH, "frame", "FRAME length runs past the end of the data")
        n = rem
    if (w.result.protocol or 0) < 4:
        w.issue(Severity.MEDIUM, "frame", "FRAME in a stream that did not declare protocol 4+")
    w.frame_end = w.r.pos + n


@op(b"(")
def _mark(w: Walker) -> None:
    w.metastack.append(w.stack)
    w.stack = []


@op(b"0")
def _pop(w: Walker) -> None:
    if w.stack:
        w.stack.pop()
    else:
        w.pop_mark()


@op(b"1")
def _pop_mark(w: Walker) -> None:
    w.pop_mark()


@op(b"2")
def _dup(w: Walker) -> None:
    w.push(w.top())


@op(b"F")
def _float(w: Walker) -> None:
    data = w.line()
    try:
        w.push(float(data))
    except ValueError:
        _lenient(w, "FLOAT")


def _lenient(w: Walker, what: str) -> None:
    """An argument we cannot parse but some unpickler might: note it and keep walking.

    Stopping early is the only way a walker can miss a global, so the walker only stops where
    every CPython unpickler certainly stops.
    """
    w.issue(Severity.MEDIUM, "malformed", f"unparseable {what} argument")
    w.push(Opaque("number"))


@op(b"I")
def _int(w: Walker) -> None:
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
def _long(w: Walker) -> None:
    data = w.line()
    if data.endswith(b"L"):
        data = data[:-1]
    try:
        w.push(int(data, 0))
    except ValueError:
        _lenient(w, "LONG")


@op(b"J")
def _binint(w: Walker) -> None:
    w.push(_i4(w.need(4))[0])


@op(b"K")
def _binint1(w: Walker) -> None:
    w.push(w.need(1)[0])


@op(b"M")
def _binint2(w: Walker) -> None:
    w.push(_u2(w.need(2))[0])


@op(b"\x8a")
def _long1(w: Walker) -> None:
    n = w.need(1)[0]
    w.push(int.from_bytes(w.need(n), "little", signed=True))


@op(b"\x8b")
def _long4(w: Walker) -> None:
    (n,) = _i4(w.need(4))
    if n < 0:
        raise Malformed("LONG4 with a negative length")
    if n > 1 << 16:
        w.payload(n, "long")
        w.push(Opaque("long"))
    else:
        w.push(int.from_bytes(w.need(n), "little", signed=True))


@op(b"G")
def _binfloat(w: Walker) -> None:
    w.push(_f8(w.need(8))[0])


@op(b"N")
def _none(w: Walker) -> None:
    w.push(None)


@op(b"\x88")
def _true(w: Walker) -> None:
    w.push(True)


@op(b"\x89")
def _false(w: Walker) -> None:
    w.push(False)


def _decode_str(w: Walker, data: Any) -> Any:
    # Protocol-0/1 byte strings decode to str with the default encoding: they can feed STACK_GLOBAL.
    if isinstance(data, bytes):
        try:
            return data.decode("ascii")
        except UnicodeDecodeError:
            return data
    return data


@op(b"S")
def _string(w: Walker) -> None:
    data = w.line()
    if len(data) >= 2 and data[0] == data[-1] and data[:1] in (b'"', b"'"):
        data = data[1:-1]
    else:
        raise Malformed("STRING argument is not quoted")
    w.push(_decode_str(w, codecs.escape_decode(data)[0]))


@op(b"T")
def _binstring(w: Walker) -> None:
    (n,) = _i4(w.need(4))
    w.push(_decode_str(w, w.payload(n, "bytes")))


@op(b"U")
def _short_binstring(w: Walker) -> None:
    w.push(_decode_str(w, w.need(w.need(1)[0])))


@op(b"V")
def _unicode(w: Walker) -> None:
    w.push(str(w.line(), "raw-unicode-escape"))


def _text(w: Walker, n: int) -> Any:
    data = w.payload(n, "str")
    if isinstance(data, Big):
        return data
    return str(data, "utf-8", "surrogatepass")


@op(b"X")
def _binunicode(w: Walker) -> None:
    w.push(_text(w, _u4(w.need(4))[0]))


@op(b"\x8c")
def _short_binunicode(w: Walker) -> None:
    w.push(_text(w, w.need(1)[0]))


@op(b"\x8d")
def _binunicode8(w: Walker) -> None:
    w.push(_text(w, _u8(w.need(8))[0]))


def _bytes(w: Walker, n: int, kind: str = "bytes") -> None:
    data = w.payload(n, kind)
    w.note_bytes(data)
    w.push(data)


@op(b"B")
def _binbytes(w: Walker) -> None:
    _bytes(w, _u4(w.need(4))[0])


@op(b"C")
def _short_binbytes(w: Walker) -> None:
    _bytes(w, w.need(1)[0])


@op(b"\x8e")
def _binbytes8(w: Walker) -> None:
    _bytes(w, _u8(w.need(8))[0])


@op(b"\x96")
def _bytearray8(w: Walker) -> None:
    _bytes(w, _u8(w.need(8))[0], "bytearray")


@op(b"\x97", b"\x98")
def _buffers(w: Walker) -> None:
    w.issue(Severity.MEDIUM, "out-of-band", "out-of-band buffer: content cannot be verified")
    if w.code == 0x98:
        w.top()
    else:
        w.push(Opaque("buffer"))


@op(b")")
def _empty_tuple(w: Walker) -> None:
    w.push(())


@op(b"t")
def _tuple(w: Walker) -> None:
    w.push(tuple(w.pop_mark()))


@op(b"\x85")
def _tuple1(w: Walker) -> None:
    w.push((w.pop(),))


@op(b"\x86")
def _tuple2(w: Walker) -> None:
    b = w.pop()
    a = w.pop()
    w.push((a, b))


@op(b"\x87")
def _tuple3(w: Walker) -> None:
    c = w.pop()
    b = w.pop()
    a = w.pop()
    w.push((a, b, c))


@op(b"]")
def _empty_list(w: Walker) -> None:
    w.push([])


@op(b"l")
def _list(w: Walker) -> None:
    w.push(list(w.pop_mark()))


@op(b"}")
def _empty_dict(w: Walker) -> None:
    w.push(DictV())


@op(b"d")
def _dict(w: Walker) -> None:
    items = w.pop_mark()
    if len(items) % 2:
        raise Malformed("DICT with an odd number of items")
    w.push(DictV(list(zip(items[::2], items[1::2], strict=True))))


@op(b"\x8f")
def _empty_set(w: Walker) -> None:
    w.push(Opaque("set", []))


@op(b"\x91")
def _frozenset(w: Walker) -> None:
    w.push(Opaque("frozenset", w.pop_mark()))


def _mutate(w: Walker, target: Any, what: str) -> None:
    if isinstance(target, GlobalRef):
        w.issue(
            Severity.HIGH,
            "mutates-global",
            f"{what} mutates a global object in place",
            module=target.module,
            name=target.name,
        )


@op(b"a")
def _append(w: Walker) -> None:
    v = w.pop()
    t = w.top()
    _mutate(w, t, "APPEND")
    if isinstance(t, list):
        t.append(v)


@op(b"e")
def _appends(w: Walker) -> None:
    items = w.pop_mark()
    t = w.top()
    _mutate(w, t, "APPENDS")
    if isinstance(t, list):
        t.extend(items)


@op(b"s")
def _setitem(w: Walker) -> None:
    v = w.pop()
    k = w.pop()
    t = w.top()
    _mutate(w, t, "SETITEM")
    if isinstance(t, DictV):
        t.items.append((k, v))


@op(b"u")
def _setitems(w: Walker) -> None:
    items = w.pop_mark()
    if len(items) % 2:
        raise Malformed("SETITEMS with an odd number of items")
    t = w.top()
    _mutate(w, t, "SETITEMS")
    if isinstance(t, DictV):
        t.items.extend(zip(items[::2], items[1::2], strict=True))


@op(b"\x90")
def _additems(w: Walker) -> None:
    items = w.pop_mark()
    t = w.top()
    _mutate(w, t, "ADDITEMS")
    if isinstance(t, Opaque) and isinstance(t.value, list):
        t.value.extend(items)


# --- memo -----------------------------------------------------------------------------------


def _get(w: Walker, key: int) -> None:
    if key not in w.memo:
        raise Malformed(f"memo key {key} read before it was stored", "memo")
    w.push(w.memo[key])


def _put(w: Walker, key: int) -> None:
    if key < 0:
        raise Malformed("negative memo key", "memo")
    w.memo[key] = w.top()


@op(b"g")
def _get_line(w: Walker) -> None:
    _get(w, int(w.line()))


@op(b"h")
def _binget(w: Walker) -> None:
    _get(w, w.need(1)[0])


@op(b"j")
def _long_binget(w: Walker) -> None:
    _get(w, _u4(w.need(4))[0])


@op(b"p")
def _put_line(w: Walker) -> None:
    _put(w, int(w.line()))


@op(b"q")
def _binput(w: Walker) -> None:
    _put(w, w.need(1)[0])


@op(b"r")
def _long_binput(w: Walker) -> None:
    _put(w, _u4(w.need(4))[0])


@op(b"\x94")
def _memoize(w: Walker) -> None:
    w.memo[len(w.memo)] = w.top()


# --- globals and calls ----------------------------------------------------------------------


def _partial_line(w: Walker) -> tuple[bytes, bool]:
    """A text argument; at the end of the data, what real unpicklers use instead.

    Both CPython unpicklers take an unterminated last line and drop its last byte: the global
    they then import is judged too (importing a module runs its top-level code).
    """
    data = w.r.readline(MAX_LINE)
    if data is not None:
        return data[:-1], False
    rest = w.r.read(MAX_LINE)
    return rest[:-1], True


def _global_text(w: Walker, opcode: str) -> tuple[str, str]:
    raw_module, cut = _partial_line(w)
    raw_name, cut2 = (b"", True) if cut else _partial_line(w)
    module = raw_module.decode("utf-8")
    name = raw_name.decode("utf-8")
    if cut or cut2:
        w.add_global(module, name, opcode)
        raise Malformed("truncated: missing newline after a text argument", "truncated")
    return module, name


@op(b"c")
def _global(w: Walker) -> None:
    module, name = _global_text(w, "GLOBAL")
    w.push(w.add_global(module, name, "GLOBAL"))


@op(b"\x93")
def _stack_global(w: Walker) -> None:
    name = w.pop()
    module = w.pop()
    if type(module) is not str or type(name) is not str:
        w.issue(
            Severity.HIGH,
            "stack-global-operand",
            "STACK_GLOBAL operands are not plain strings "
            f"({type(module).__name__}, {type(name).__name__}): the target cannot be verified",
        )
        w.push(Opaque("unverified-global"))
        return
    w.push(w.add_global(module, name, "STACK_GLOBAL"))


@op(b"\x82", b"\x83", b"\x84")
def _ext(w: Walker) -> None:
    size = {0x82: 1, 0x83: 2, 0x84: 4}[w.code]
    value = int.from_bytes(w.need(size), "little")
    w.issue(
        Severity.HIGH,
        "extension-code",
        f"extension code {value}: resolves a global through copyreg's registry",
    )
    w.push(Opaque("ext", value))


@op(b"P")
def _persid(w: Walker) -> None:
    pid = w.line().decode("ascii")
    w.result.persids.append(pid)
    w.push(Opaque("persid", pid))


@op(b"Q")
def _binpersid(w: Walker) -> None:
    pid = w.pop()
    w.result.persids.append(pid)
    w.push(Opaque("persid", pid))


@op(b"R")
def _reduce(w: Walker) -> None:
    args = w.pop()
    func = w.pop()
    w.called(func, "REDUCE")
    w.push(Obj(func, args, w.op_offset))


@op(b"\x81")
def _newobj(w: Walker) -> None:
    args = w.pop()
    cls = w.pop()
    w.called(cls, "NEWOBJ")
    w.push(Obj(cls, args, w.op_offset))


@op(b"\x92")
def _newobj_ex(w: Walker) -> None:
    kwargs = w.pop()
    args = w.pop()
    cls = w.pop()
    w.called(cls, "NEWOBJ_EX")
    w.push(Obj(cls, (args, kwargs), w.op_offset))


@op(b"i")
def _inst(w: Walker) -> None:
    module, name = _global_text(w, "INST")
    g = w.add_global(module, name, "INST")
    w.push(Obj(g, tuple(w.pop_mark()), w.op_offset))


@op(b"o")
def _obj(w: Walker) -> None:
    items = w.pop_mark()
    if not items:
        raise Malformed("OBJ without a class")
    cls = items[0]
    w.called(cls, "OBJ")
    w.push(Obj(cls, tuple(items[1:]), w.op_offset))


def _state_keys(state: Any) -> list[Any]:
    keys: list[Any] = []
    parts = state if isinstance(state, tuple) and len(state) == 2 else (state,)
    for part in parts:
        if isinstance(part, DictV):
            keys.extend(k for k, _ in part.items)
    return keys


@op(b"b")
def _build(w: Walker) -> None:
    state = w.pop()
    target = w.top()
    if isinstance(target, GlobalRef):
        w.issue(
            Severity.HIGH,
            "build-global",
            "BUILD on a global: sets attributes on a class, function or module",
            module=target.module,
            name=target.name,
        )
    elif not isinstance(target, Obj):
        w.issue(Severity.HIGH, "build-target", "BUILD on a value that is not a built object")
    for k in _state_keys(state):
        if isinstance(k, str) and k.startswith("__") and k.endswith("__"):
            w.issue(
                Severity.HIGH,
                "build-dunder",
                f"BUILD sets the special attribute {k!r} (class or method hijack)",
            )
        elif not isinstance(k, str):
            w.issue(Severity.HIGH, "build-key", "BUILD state with a non-string attribute name")
    if isinstance(target, Obj):
        target.state = state
        w.result.builds.append(target)
        if w.on_build is not None:
            w.on_build(w, target)


def walk(reader: Reader, *, on_build: Callable[[Walker, Obj], None] | None = None) -> WalkResult:
    """Walk one pickle starting at the reader's position (see :class:`Walker`)."""
    return Walker(reader, on_build=on_build).walk()


__all__ = [
    "Big",
    "DictV",
    "GlobalRef",
    "Issue",
    "Malformed",
    "Obj",
    "Opaque",
    "WalkResult",
    "Walker",
    "walk",
]

"""Opcode handlers for globals, calls, object state, the memo, framing and mutation.

These are the opcodes that decide what a real unpickler would import and call, so each one
records what it names (:meth:`WalkState.add_global`) or raises an issue for structural tricks.
"""

from __future__ import annotations

from typing import Any

from packserve.scan.pickle.handlers.plain import _u4, _u8, op
from packserve.scan.pickle.machine import WalkState
from packserve.scan.pickle.values import MAX_LINE, DictV, GlobalRef, Malformed, Obj, Opaque
from packserve.scan.report import Severity

NAME_KEEP = 4096  # characters of a GLOBAL/INST name kept for the report


@op(b".")
def _stop(w: WalkState) -> bool:
    return True


@op(b"\x80")
def _proto(w: WalkState) -> None:
    proto = w.need(1)[0]
    if w.result.protocol is None:
        w.result.protocol = proto  # it claims to be a pickle: judged as one from here on
    if proto > 5:
        raise Malformed(f"unsupported pickle protocol {proto}", "protocol")
    if w.op_offset != w.result.start:
        w.issue(Severity.MEDIUM, "protocol", "PROTO opcode not at the start of the stream")


@op(b"\x95")
def _frame(w: WalkState) -> None:
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


def _mutate(w: WalkState, target: Any, what: str) -> None:
    if isinstance(target, GlobalRef):
        w.issue(
            Severity.HIGH,
            "mutates-global",
            f"{what} mutates a global object in place",
            module=target.module,
            name=target.name,
        )


@op(b"a")
def _append(w: WalkState) -> None:
    v = w.pop()
    t = w.top()
    _mutate(w, t, "APPEND")
    if isinstance(t, list):
        t.append(v)


@op(b"e")
def _appends(w: WalkState) -> None:
    items = w.pop_mark()
    t = w.top()
    _mutate(w, t, "APPENDS")
    if isinstance(t, list):
        t.extend(items)


@op(b"s")
def _setitem(w: WalkState) -> None:
    v = w.pop()
    k = w.pop()
    t = w.top()
    _mutate(w, t, "SETITEM")
    if isinstance(t, DictV):
        t.items.append((k, v))


@op(b"u")
def _setitems(w: WalkState) -> None:
    items = w.pop_mark()
    if len(items) % 2:
        raise Malformed("SETITEMS with an odd number of items")
    t = w.top()
    _mutate(w, t, "SETITEMS")
    if isinstance(t, DictV):
        t.items.extend(zip(items[::2], items[1::2], strict=True))


@op(b"\x90")
def _additems(w: WalkState) -> None:
    items = w.pop_mark()
    t = w.top()
    _mutate(w, t, "ADDITEMS")
    if isinstance(t, Opaque) and isinstance(t.value, list):
        t.value.extend(items)


def _get(w: WalkState, key: int) -> None:
    if key not in w.memo:
        raise Malformed(f"memo key {key} read before it was stored", "memo")
    w.push(w.memo[key])


def _put(w: WalkState, key: int) -> None:
    if key < 0:
        raise Malformed("negative memo key", "memo")
    w.memo[key] = w.top()


@op(b"g")
def _get_line(w: WalkState) -> None:
    _get(w, int(w.line()))


@op(b"h")
def _binget(w: WalkState) -> None:
    _get(w, w.need(1)[0])


@op(b"j")
def _long_binget(w: WalkState) -> None:
    _get(w, _u4(w.need(4))[0])


@op(b"p")
def _put_line(w: WalkState) -> None:
    _put(w, int(w.line()))


@op(b"q")
def _binput(w: WalkState) -> None:
    _put(w, w.need(1)[0])


@op(b"r")
def _long_binput(w: WalkState) -> None:
    _put(w, _u4(w.need(4))[0])


@op(b"\x94")
def _memoize(w: WalkState) -> None:
    w.memo[len(w.memo)] = w.top()


def _partial_line(w: WalkState) -> tuple[bytes, bool]:
    """A text argument; at the end of the data, what real unpicklers use instead.

    Both CPython unpicklers take an unterminated last line and drop its last byte: the global
    they then import is judged too (importing a module runs its top-level code).
    """
    data = w.r.readline(MAX_LINE)
    if data is not None:
        return data[:-1], False
    if w.r.line_too_long(MAX_LINE):
        raise Malformed(f"a GLOBAL/INST argument longer than {MAX_LINE} bytes", "resource-limit")
    rest = w.r.read(MAX_LINE)
    return rest[:-1], True


def _short(text: str) -> str:
    """Names are kept for the report only: a huge one is cut (and can never match the policy)."""
    return text if len(text) <= NAME_KEEP else text[:NAME_KEEP] + "…"


def _global_text(w: WalkState, opcode: str) -> tuple[str, str]:
    raw_module, cut = _partial_line(w)
    raw_name, cut2 = (b"", True) if cut else _partial_line(w)
    module = _short(raw_module.decode("utf-8"))
    name = _short(raw_name.decode("utf-8"))
    if cut or cut2:
        w.add_global(module, name, opcode)
        raise Malformed("truncated: missing newline after a text argument", "truncated")
    return module, name


@op(b"c")
def _global(w: WalkState) -> None:
    module, name = _global_text(w, "GLOBAL")
    w.push(w.add_global(module, name, "GLOBAL"))


@op(b"\x93")
def _stack_global(w: WalkState) -> None:
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
def _ext(w: WalkState) -> None:
    size = {0x82: 1, 0x83: 2, 0x84: 4}[w.code]
    value = int.from_bytes(w.need(size), "little")
    w.issue(
        Severity.HIGH,
        "extension-code",
        f"extension code {value}: resolves a global through copyreg's registry",
    )
    w.push(Opaque("ext", value))


@op(b"P")
def _persid(w: WalkState) -> None:
    pid = w.line().decode("ascii")
    w.result.persids.append(pid)
    w.push(Opaque("persid", pid))


@op(b"Q")
def _binpersid(w: WalkState) -> None:
    pid = w.pop()
    w.result.persids.append(pid)
    w.push(Opaque("persid", pid))


@op(b"R")
def _reduce(w: WalkState) -> None:
    args = w.pop()
    func = w.pop()
    w.called(func, "REDUCE")
    w.push(Obj(func, args, w.op_offset))


@op(b"\x81")
def _newobj(w: WalkState) -> None:
    args = w.pop()
    cls = w.pop()
    w.called(cls, "NEWOBJ")
    w.push(Obj(cls, args, w.op_offset))


@op(b"\x92")
def _newobj_ex(w: WalkState) -> None:
    kwargs = w.pop()
    args = w.pop()
    cls = w.pop()
    w.called(cls, "NEWOBJ_EX")
    w.push(Obj(cls, (args, kwargs), w.op_offset))


@op(b"i")
def _inst(w: WalkState) -> None:
    module, name = _global_text(w, "INST")
    g = w.add_global(module, name, "INST")
    w.push(Obj(g, tuple(w.pop_mark()), w.op_offset))


@op(b"o")
def _obj(w: WalkState) -> None:
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
def _build(w: WalkState) -> None:
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


__all__: list[str] = []  # handlers register themselves in ops_values.DISPATCH

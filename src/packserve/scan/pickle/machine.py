"""The walker's state and helpers: the stack, the memo, reading arguments, recording issues.

Opcode handlers work on a :class:`WalkState`; :mod:`packserve.scan.pickle.opcodes` runs the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from packserve.scan.pickle.values import MAX_LINE, SMALL_BYTES, Big, GlobalRef, Issue, Malformed, Obj
from packserve.scan.policy import plausible_module
from packserve.scan.report import Severity
from packserve.scan.stream import Reader

# This many opcodes in a row: a pickle, whatever else it is. Text files stop within ~6 (a
# sample of 3,000 text files on a Debian system: none past 6); a stream this long that then
# stops is a broken or evasive pickle, and a finding.
PICKLE_LIKE_OPS = 8
# A first opcode whose argument only a pickle writer would produce (a strictly parsed INT,
# LONG, FLOAT or quoted STRING line): what follows is judged as a pickle, even if it stops.
STRICT_FIRST = frozenset(b"ILFS")
MAX_VALUES = 1 << 22  # values built, not bytes: bounds memory (~300 MB) on hostile streams


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
    strict_start: bool = False  # the first opcode is one of STRICT_FIRST, cleanly parsed

    @property
    def ok(self) -> bool:
        return self.end is not None and self.error is None

    @property
    def looks_like_pickle(self) -> bool:
        """Could a real unpickler have resolved anything before failing?

        Data that is not a pickle fails on its first opcodes without naming any importable
        global; such data cannot run code when unpickled.
        """
        if self.ok or self.protocol is not None or self.strict_start or self.ops >= PICKLE_LIKE_OPS:
            return True
        if any(i.rule in ("extension-code", "resource-limit", "frame") for i in self.issues):
            return True
        return any(plausible_module(g.module) for g in self.globals)


class WalkState:
    """The state of one walk and the helpers every opcode handler uses.

    Handlers (:mod:`.handlers`) only see this class; the main loop
    that dispatches to them lives in :class:`~packserve.scan.pickle.opcodes.Walker`. Keeping the two
    apart lets the handlers sit below the walker with no import cycle.

    ``on_build(walker, obj)`` is called after a BUILD: container formats that interleave raw
    data with opcodes (joblib's NumpyArrayWrapper) use it to skip that data.
    """

    def __init__(
        self,
        reader: Reader,
        *,
        on_build: Callable[[WalkState, Obj], None] | None = None,
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
            if self.r.line_too_long(MAX_LINE):
                raise Malformed(f"a text argument longer than {MAX_LINE} bytes", "resource-limit")
            raise Malformed("truncated: missing newline after a text argument", "truncated")
        return data[:-1]

    def text_value(self, data: Any, kind: str) -> Any:
        """A decoded text argument, or a :class:`Big` placeholder if it is big (bounded memory)."""
        if len(data) > SMALL_BYTES:
            return Big(kind, len(data), self.op_offset)
        return data

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


__all__ = ["MAX_VALUES", "PICKLE_LIKE_OPS", "STRICT_FIRST", "WalkResult", "WalkState"]

"""Static pickle walker: every opcode of protocols 0-5, with its own stack and memo.

Nothing named in the stream is imported, resolved or called. The walker simulates only what it
needs to recover every global a real unpickler would resolve (GLOBAL, INST, STACK_GLOBAL fed
from strings or the memo, EXT codes) and the objects built from them (REDUCE, NEWOBJ,
NEWOBJ_EX, OBJ, INST, BUILD). Structural tricks (memo keys never stored, non-string
STACK_GLOBAL operands, FRAME inconsistencies, unknown opcodes, truncation) become *issues*:
the caller turns them into findings, so malformed input fails closed.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from packserve.scan.pickle.handlers import DISPATCH
from packserve.scan.pickle.machine import (
    MAX_VALUES,
    PICKLE_LIKE_OPS,
    STRICT_FIRST,
    WalkResult,
    WalkState,
)
from packserve.scan.pickle.values import Big, DictV, GlobalRef, Issue, Malformed, Obj, Opaque
from packserve.scan.report import Severity
from packserve.scan.stream import Reader


class Walker(WalkState):
    """Walk one pickle from the reader's current position to STOP (or the first error).

    ``on_build(walker, obj)`` is called after a BUILD: container formats that interleave raw
    data with opcodes (joblib's NumpyArrayWrapper) use it to skip that data.
    """

    # --- main loop -------------------------------------------------------------------------

    def walk(self) -> WalkResult:
        res = self.result
        table = DISPATCH
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
                if res.ops == 1 and code in STRICT_FIRST and not res.issues:
                    res.strict_start = True
        except Malformed as exc:
            res.error = exc.reason
            self.issue(Severity.HIGH, exc.rule, exc.reason)
        except (ValueError, OverflowError, UnicodeDecodeError, struct.error) as exc:
            res.error = f"malformed argument: {type(exc).__name__}"
            self.issue(Severity.HIGH, "malformed", res.error)
        return res


def walk(reader: Reader, *, on_build: Callable[[WalkState, Obj], None] | None = None) -> WalkResult:
    """Walk one pickle starting at the reader's position (see :class:`Walker`)."""
    return Walker(reader, on_build=on_build).walk()


__all__ = [
    "MAX_VALUES",
    "PICKLE_LIKE_OPS",
    "Big",
    "DictV",
    "GlobalRef",
    "Issue",
    "Malformed",
    "Obj",
    "Opaque",
    "WalkResult",
    "WalkState",
    "Walker",
    "walk",
]

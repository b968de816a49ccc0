"""Values the pickle walker builds: globals, call results, skipped payloads, issues.

They model just enough of an unpickler's objects to recover every global a stream names and
what is done with it; none of them is ever the real object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from packserve.scan.report import Severity

SMALL_BYTES = 1 << 20  # byte strings longer than this are skipped, not read
# Text arguments (protocol 0-1) are read whole up to this: CPython reads lines of any length, so
# a shorter limit would let a long first line hide the opcodes after it. Longer: too large to
# verify (an error, never "clean").
MAX_LINE = 64 << 20


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


class Malformed(Exception):
    """The stream stops being a valid pickle here (a real unpickler raises)."""

    def __init__(self, reason: str, rule: str = "malformed") -> None:
        super().__init__(reason)
        self.reason = reason
        self.rule = rule


__all__ = [
    "MAX_LINE",
    "SMALL_BYTES",
    "Big",
    "DictV",
    "GlobalRef",
    "Issue",
    "Malformed",
    "Obj",
    "Opaque",
]

"""What format scanners share with the scanner: where they are, and what they report into.

Format modules (:mod:`.formats`, :mod:`.zipscan`, :mod:`.hooks`) call back into the scanner
to report and to scan what a container holds. They see it only through :class:`ScanHost`,
so they sit below :mod:`.scanner` and no module imports its own caller.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

from packserve.scan.pickle.machine import WalkResult
from packserve.scan.report import ScanReport, Severity
from packserve.scan.stream import Reader, Source


@dataclass(frozen=True)
class Ctx:
    """Where we are: the file, the member path inside containers, nesting depth."""

    file: str
    member: str | None = None
    depth: int = 0
    torchscript: bool = False

    def child(self, name: str, **kw: Any) -> Ctx:
        member = f"{self.member}/{name}" if self.member else name
        return replace(self, member=member, depth=self.depth + 1, **kw)


@dataclass
class StorageInfo:
    """A torch storage a pickle declares through a persistent id."""

    key: str
    type_name: str
    numel: int | None


class ScanHost(Protocol):
    """The scanner as format modules see it (implemented by :class:`.scanner.Scanner`)."""

    report: ScanReport
    max_decompressed: int
    verify_crc: bool

    def finding(
        self,
        ctx: Ctx,
        severity: Severity,
        rule: str,
        reason: str,
        *,
        offset: int | None = None,
        module: str | None = None,
        name: str | None = None,
    ) -> None: ...

    def error(self, ctx: Ctx, reason: str) -> None: ...

    def note_verified(self) -> None: ...

    def scan_stream(
        self,
        f: Source,
        ctx: Ctx,
        start: int,
        length: int | None,
        *,
        seekable_file: bool = False,
        limit: int | None = None,
        reader: Reader | None = None,
    ) -> None: ...

    def scan_pickles(self, r: Reader, ctx: Ctx, *, must_be_pickle: bool = False) -> list[StorageInfo]: ...

    def walk_one(self, r: Reader, ctx: Ctx, *, must_be_pickle: bool = False) -> WalkResult | None: ...

    def storages(self, res: WalkResult) -> list[StorageInfo]: ...


__all__ = ["Ctx", "ScanHost", "StorageInfo"]

"""What a scan returns: findings (the file is unsafe) and errors (the file could not be scanned).

Both are fail-closed signals: only a report with neither is ``clean``. Files with no pickle
data at all (a PNG, a CSV, an ONNX file, corrupt bytes) are listed in ``not_pickle``: they are
not called clean, and a scan of nothing but them has its own exit code
(:class:`~packserve.errors.ExitCode`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from packserve.errors import ExitCode


class Severity(StrEnum):
    """How bad a finding is. Every severity makes the report unclean."""

    CRITICAL = "critical"  # a known-dangerous global: code execution, file/network access
    HIGH = "high"  # an unknown global, a computed call, a structural trick
    MEDIUM = "medium"  # malformed or unverifiable content (fails closed)


@dataclass(frozen=True)
class Finding:
    """One reason not to load a file.

    ``member`` names the place inside a container (zip member, nested pickle) or is ``None`` for
    the file itself; ``offset`` is the byte offset of the opcode inside that member's stream.
    """

    file: str
    member: str | None
    offset: int | None
    module: str | None
    name: str | None
    severity: Severity
    reason: str
    rule: str = "unknown-global"

    @property
    def global_name(self) -> str | None:
        """``module.name`` as the pickle names it, or ``None`` for non-global findings."""
        if self.module is None and self.name is None:
            return None
        return f"{self.module}.{self.name}" if self.module else str(self.name)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["severity"] = self.severity.value
        d["global"] = self.global_name
        return d


@dataclass(frozen=True)
class ScanError:
    """A file (or member) that could not be scanned at all: unreadable, too large, unsupported."""

    file: str
    member: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ScanReport:
    """Result of :func:`packserve.scan`. ``clean`` only if there is nothing to report."""

    findings: list[Finding] = field(default_factory=list)
    errors: list[ScanError] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # path -> detected format
    not_pickle: list[str] = field(default_factory=list)  # files holding no pickle data at all
    bytes_scanned: int = 0

    @property
    def clean(self) -> bool:
        return not self.findings and not self.errors

    @property
    def exit_code(self) -> ExitCode:
        """UNSAFE if any finding (the stronger signal), else SCAN_INCOMPLETE if any error, else
        NOT_A_PICKLE if no file held pickle data, else OK."""
        if self.findings:
            return ExitCode.UNSAFE
        if self.errors:
            return ExitCode.SCAN_INCOMPLETE
        if len(self.not_pickle) >= len(self.files):
            return ExitCode.NOT_A_PICKLE
        return ExitCode.OK

    def merge(self, other: ScanReport) -> None:
        self.findings.extend(other.findings)
        self.errors.extend(other.errors)
        self.files.update(other.files)
        known = set(self.not_pickle)  # a set: a directory may list 100k CSVs
        self.not_pickle.extend(f for f in other.not_pickle if f not in known)
        self.bytes_scanned += other.bytes_scanned

    def summary(self) -> str:
        """``2 file(s) verified, 3 not a pickle format`` (or findings and errors)."""
        if self.clean:
            parts = [f"{len(self.files) - len(self.not_pickle)} file(s) verified"]
        else:
            found = f"{len(self.findings)} finding(s), {len(self.errors)} error(s)"
            parts = [f"{found} in {len(self.files)} file(s)"]
        if self.not_pickle:
            parts.append(f"{len(self.not_pickle)} not a pickle format")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "exit_code": int(self.exit_code),
            "files": dict(self.files),
            "not_pickle": list(self.not_pickle),
            "findings": [f.to_dict() for f in self.findings],
            "errors": [e.to_dict() for e in self.errors],
        }


__all__ = ["Finding", "ScanError", "ScanReport", "Severity"]

"""``scan``: static, default-deny, fail-closed detection of malicious pickle-based model files.

Nothing in a scanned file is ever imported, resolved or executed. Public API::

    report = scan(path)          # ScanReport: findings, errors, clean, exit_code
    ensure_safe(path)            # raises UnsafeFileError / ScanFailedError unless clean

``import packserve.scan`` is light (stdlib only; numpy is imported lazily for ``.npy``).
"""

from __future__ import annotations

import os

from packserve.errors import ScanFailedError, UnsafeFileError
from packserve.scan.policy import is_allowed, judge
from packserve.scan.report import Finding, ScanError, ScanReport, Severity
from packserve.scan.scanner import DEFAULT_MAX_DECOMPRESSED, scan, scan_bytes


def ensure_safe(
    path: str | os.PathLike[str], *, max_decompressed: int = DEFAULT_MAX_DECOMPRESSED
) -> ScanReport:
    """Scan ``path`` and return the report if it is clean; raise otherwise.

    :class:`~packserve.errors.UnsafeFileError` (exit 1) if there are findings (the report is on
    ``exc.report``), :class:`~packserve.errors.ScanFailedError` (exit 2) if it could not be
    scanned. Callers load the file only after this returns.
    """
    report = scan(path, max_decompressed=max_decompressed)
    name = os.path.basename(os.fspath(path)) or os.fspath(path)
    if report.findings:
        first = report.findings[0]
        where = f" in {first.member}" if first.member else ""
        more = f" (+{len(report.findings) - 1} more)" if len(report.findings) > 1 else ""
        exc = UnsafeFileError(
            f"refusing to load {name}: {first.severity.value}{where}: {first.reason}{more}",
            report=report,
        )
        raise exc
    if report.errors:
        raise ScanFailedError(f"could not scan {name}: {report.errors[0].reason}")
    return report


__all__ = [
    "Finding",
    "ScanError",
    "ScanReport",
    "Severity",
    "ensure_safe",
    "is_allowed",
    "judge",
    "scan",
    "scan_bytes",
]

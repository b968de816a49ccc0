"""``packserve scan`` without typer: the work of the command, and a start-up fast path.

CI jobs and pre-commit hooks scan file by file, so start-up is most of a scan's time. Typer
(and the pydantic it uses to coerce arguments) costs more than scanning a small file; a plain
``packserve scan PATH... [--json|--sarif]`` is therefore parsed here, with the flags of the
typer command (:mod:`.scan`, the same :func:`run_scan`); anything else (``--help``, an unknown
flag, a mistake) goes through typer. A test keeps :data:`SCAN_FLAGS` equal to that command's.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

SCAN_FLAGS = {"--json": "json_out", "--sarif": "sarif"}


def run_scan(paths: Sequence[Path], *, json_out: bool = False, sarif: bool = False) -> int:
    """Scan ``paths``, print the report (table, JSON or SARIF) and return its exit code."""
    from packserve.errors import ConfigError
    from packserve.scan import ScanReport, scan

    if json_out and sarif:
        raise ConfigError("--json and --sarif are mutually exclusive")
    report = ScanReport()
    for path in paths:
        report.merge(scan(path))
    if json_out or sarif:
        import json

        from packserve import __version__
        from packserve.scan.render import to_json, to_sarif

        doc = to_sarif(report, version=__version__) if sarif else to_json(report)
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        from packserve.scan.render import render_text

        render_text(report, sys.stdout)
    return report.exit_code


def fast_scan(args: Sequence[str]) -> int | None:
    """Run ``scan`` for plain arguments and return the exit code; ``None``: let typer parse."""
    if len(args) < 2 or args[0] != "scan":
        return None
    flags = {name: False for name in SCAN_FLAGS.values()}
    paths: list[Path] = []
    for arg in args[1:]:
        if arg in SCAN_FLAGS:
            flags[SCAN_FLAGS[arg]] = True
        elif arg.startswith("-") and arg != "-":
            return None
        else:
            paths.append(Path(arg))
    if not paths:
        return None
    from packserve.cli.console import report_error
    from packserve.errors import PackserveError

    try:
        return run_scan(paths, **flags)
    except PackserveError as exc:
        return report_error(exc)


__all__ = ["SCAN_FLAGS", "fast_scan", "run_scan"]

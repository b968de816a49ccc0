"""Scan reports for people (a table) and machines (JSON, SARIF 2.1.0 for code-scanning UIs)."""

from __future__ import annotations

import os
from typing import IO, Any

from packserve.errors import ExitCode
from packserve.scan.report import ScanReport, Severity

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_LEVEL = {Severity.CRITICAL: "error", Severity.HIGH: "error", Severity.MEDIUM: "warning"}
_STYLE = {Severity.CRITICAL: "bold red", Severity.HIGH: "red", Severity.MEDIUM: "yellow"}
_VERDICT = {
    ExitCode.OK: "[green]clean[/]",
    ExitCode.UNSAFE: "[bold red]UNSAFE[/]",
    ExitCode.SCAN_INCOMPLETE: "[yellow]NOT VERIFIED[/]",
    ExitCode.NOT_A_PICKLE: "[yellow]nothing to verify[/]",
}
_ANSI = {ExitCode.OK: "32", ExitCode.NOT_A_PICKLE: "33"}


def to_json(report: ScanReport) -> dict[str, Any]:
    return report.to_dict()


def to_sarif(report: ScanReport, *, version: str) -> dict[str, Any]:
    """One run, one result per finding; scan errors are tool notifications (not clean)."""
    rules = sorted({f.rule for f in report.findings})
    results = []
    for f in report.findings:
        location: dict[str, Any] = {"artifactLocation": {"uri": f.file}}
        if f.offset is not None and f.member is None:
            location["region"] = {"byteOffset": f.offset}
        results.append(
            {
                "ruleId": f.rule,
                "level": _LEVEL[f.severity],
                "message": {"text": f.reason},
                "locations": [{"physicalLocation": location}],
                "properties": {
                    "severity": f.severity.value,
                    "member": f.member,
                    "offset": f.offset,
                    "global": f.global_name,
                },
            }
        )
    notifications = [
        {
            "level": "error",
            "message": {"text": e.reason},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": e.file}}}],
        }
        for e in report.errors
    ]
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "packserve-scan",
                        "version": version,
                        "informationUri": "https://github.com/packserve/packserve",
                        "rules": [{"id": r, "shortDescription": {"text": r}} for r in rules],
                    }
                },
                "invocations": [
                    {
                        "executionSuccessful": not report.errors,
                        "exitCode": report.exit_code,
                        "toolExecutionNotifications": notifications,
                    }
                ],
                "results": results,
            }
        ],
    }


def render_table(report: ScanReport, console: Any) -> None:
    """A readable table of findings, then errors, then a one-line verdict."""
    from rich.table import Table

    if report.findings:
        table = Table(title="findings", show_lines=False)
        for col in ("severity", "file", "member", "offset", "global", "reason"):
            table.add_column(col, overflow="fold")
        for f in report.findings:
            table.add_row(
                f"[{_STYLE[f.severity]}]{f.severity.value}[/]",
                f.file,
                f.member or "",
                "" if f.offset is None else str(f.offset),
                f.global_name or "",
                f.reason,
            )
        console.print(table)
    if report.errors:
        table = Table(title="could not scan")
        table.add_column("file", overflow="fold")
        table.add_column("member", overflow="fold")
        table.add_column("reason", overflow="fold")
        for e in report.errors:
            table.add_row(e.file, e.member or "", e.reason)
        console.print(table)
    for line in _not_pickle_lines(report):
        console.print(line, highlight=False, soft_wrap=True)
    console.print(f"{_VERDICT[report.exit_code]}: {report.summary()}", highlight=False)


def _not_pickle_lines(report: ScanReport, most: int = 20) -> list[str]:
    """The files that hold no pickle data, the first ``most`` of them (--json lists all)."""
    lines = [f"not a pickle format: {name}" for name in report.not_pickle[:most]]
    if len(report.not_pickle) > most:
        lines.append(f"... and {len(report.not_pickle) - most} more not a pickle format (--json lists all)")
    return lines


def render_text(report: ScanReport, stream: IO[str]) -> None:
    """:func:`render_table` when there is something to show; otherwise plain lines: the files
    that are not a pickle format, then the verdict.

    rich is imported only for tables: most scans in CI are clean, and its import costs more
    than scanning a small file.
    """
    if report.findings or report.errors:
        from rich.console import Console

        render_table(report, Console(file=stream))
        return
    color = stream.isatty() and "NO_COLOR" not in os.environ
    for line in _not_pickle_lines(report):
        stream.write(line + "\n")
    code = report.exit_code
    word = "clean" if code == ExitCode.OK else "nothing to verify"
    if color:
        word = f"\x1b[{_ANSI[code]}m{word}\x1b[0m"
    stream.write(f"{word}: {report.summary()}\n")


__all__ = ["render_table", "render_text", "to_json", "to_sarif"]

"""``packserve scan``: static scan of pickle-based files (nothing is ever loaded)."""

from __future__ import annotations

from pathlib import Path

import typer

from packserve.cli.fastpath import run_scan


def scan_cmd(
    paths: list[Path] = typer.Argument(..., help="Files or directories (every file is scanned "
                                       "by content, whatever its extension)."),
    json_out: bool = typer.Option(False, "--json", help="JSON report on stdout."),
    sarif: bool = typer.Option(False, "--sarif", help="SARIF 2.1.0 report on stdout."),
) -> None:
    """Statically scan pickle/joblib/torch/npy files; never executes them.

    A file holding no pickle data (a PNG, a CSV, an ONNX file) is listed as "not a pickle
    format", never as clean; next to pickles it does not change the exit code, so a repository
    scan stays usable. Exit codes: `packserve --help`.
    """
    raise typer.Exit(run_scan(paths, json_out=json_out, sarif=sarif))


__all__ = ["scan_cmd"]

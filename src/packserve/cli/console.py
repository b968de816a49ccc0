"""Where commands print, and the one place a PackserveError becomes a message and exit code.

rich is imported on first styled output, not at start-up: a ``packserve serve`` process never
prints through it (and saves its ~1.5 MiB of resident memory), and ``packserve scan`` of a
clean file starts faster without it.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from packserve.errors import PackserveError


@functools.cache
def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr)


def out() -> Console:
    """The stdout console."""
    return _console(False)


def err() -> Console:
    """The stderr console (errors, progress)."""
    return _console(True)


def report_error(exc: PackserveError) -> int:
    """Print ``error: <message>`` on stderr and return the error's exit code (the one mapping)."""
    from rich.markup import escape  # messages hold "[extra]" / "[0, 9]": text, not markup

    err().print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True)
    return exc.exit_code


__all__ = ["err", "out", "report_error"]

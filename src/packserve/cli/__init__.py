"""The ``packserve`` command line: :func:`main` (the console script) and the typer :data:`app`.

One module per command group; :mod:`.typer_app` wires them and maps errors to exit codes.
``import packserve.cli`` imports neither typer nor rich: :func:`main` answers a plain
``packserve scan FILE...`` without them (:mod:`.fastpath`) and loads :data:`app` otherwise.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from packserve.cli.typer_app import app


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    from packserve.cli.fastpath import fast_scan

    args = list(sys.argv[1:] if argv is None else argv)
    if args in ([], ["demo"], ["deploy"]):  # a bare group: its help is the answer, exit 0
        args.append("--help")
    code = fast_scan(args)
    if code is not None:
        sys.exit(code)
    from packserve.cli.typer_app import app

    app(args=args)


def __getattr__(name: str) -> Any:
    if name == "app":
        from packserve.cli.typer_app import app

        return app
    raise AttributeError(f"module 'packserve.cli' has no attribute {name!r}")


__all__ = ["app", "main"]

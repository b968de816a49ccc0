"""The ``packserve`` command line: a thin typer layer over the library.

Each command only parses flags and calls the layer that does the work. Errors are
:class:`~packserve.errors.PackserveError` subclasses carrying their own exit code; they are
turned into a one-line message and that exit code in :func:`main`, nowhere else.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from packserve import __version__
from packserve.errors import PackserveError

app = typer.Typer(
    name="packserve",
    help="Trained model -> safe bundle -> fast, production HTTP inference API.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)


@app.callback()
def _root() -> None:
    """Trained model -> safe bundle -> fast, production HTTP inference API."""

out = Console()


F = TypeVar("F", bound=Callable[..., Any])


def command(*args: Any, **kwargs: Any) -> Callable[[F], F]:
    """``app.command`` that turns a PackserveError into its message and exit code."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*a: Any, **k: Any) -> Any:
            try:
                return fn(*a, **k)
            except PackserveError as exc:
                err.print(f"[bold red]error:[/] {exc.message}", highlight=False, soft_wrap=True)
                raise typer.Exit(exc.exit_code) from None

        app.command(*args, **kwargs)(wrapper)
        return fn

    return deco


@command()
def version() -> None:
    """Print packserve's version."""
    out.print(__version__)


# --- commands are added below, one section per layer ------------------------------------
# Each section imports its layer lazily inside the command, so `packserve --help` stays fast.

demo_app = typer.Typer(help="Built-in, self-contained demonstrations.", no_args_is_help=True)
app.add_typer(demo_app, name="demo")

# [pack / inspect]

# [scan]

# [serve]

# [bench / locustfile]

# [deploy]

# [demo]


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

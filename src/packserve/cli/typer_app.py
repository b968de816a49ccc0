"""The ``packserve`` command line: the typer app, its command table and the one error mapping.

Each command lives in the module of its group (:mod:`.pack`, :mod:`.scan`, :mod:`.serve`,
:mod:`.bench`, :mod:`.deploy`, :mod:`.demo`) and imports the layer that does the work inside its
body, so start-up pays only for typer. ``serve`` builds its flags from pydantic settings: it is
loaded only when it runs or shows its own help. Errors are
:class:`~packserve.errors.PackserveError` subclasses carrying their exit code; :func:`mapped`
turns them into a one-line message and that code, for every command, nowhere else.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from typer.core import TyperCommand, TyperGroup

from packserve.cli import bench, demo, deploy, pack, scan, signing
from packserve.cli.console import out, report_error
from packserve.errors import PackserveError, exit_code_help

F = TypeVar("F", bound=Callable[..., Any])
HELP = "Trained model -> safe bundle -> fast, production HTTP inference API."


def mapped(fn: F) -> F:
    """Turn a PackserveError into its message on stderr and its exit code (see report_error)."""

    @functools.wraps(fn)
    def wrapper(*a: Any, **k: Any) -> Any:
        try:
            return fn(*a, **k)
        except PackserveError as exc:
            raise typer.Exit(report_error(exc)) from None

    return wrapper  # type: ignore[return-value]


def _load_serve() -> Callable[..., Any]:
    from packserve.cli.serve import serve as serve_cmd

    return serve_cmd


# Commands built on first use: name -> (loader of the command function, short help for
# listings, the command it is listed after). A test keeps the short help equal to the docstring.
LAZY: dict[str, tuple[Callable[[], Callable[..., Any]], str, str]] = {
    "serve": (
        _load_serve,
        "Serve a bundle or a repository of bundles over HTTP (predict, batch, health, metrics).",
        "scan",
    ),
}


class LazyGroup(TyperGroup):
    """A typer group whose :data:`LAZY` commands are built when they run, not at start-up."""

    listing = False  # True while help lists the commands: lazy ones show a stub

    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)
        for name, (_, _, after) in LAZY.items():
            if name not in names:
                names.insert(names.index(after) + 1 if after in names else len(names), name)
        return names

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in LAZY and cmd_name not in self.commands:
            load, short, _ = LAZY[cmd_name]
            if self.listing:
                return TyperCommand(cmd_name, help=short, callback=None)
            one = _typer(None)
            one.command(cmd_name)(mapped(load()))
            self.commands[cmd_name] = typer.main.get_command(one)
        return super().get_command(ctx, cmd_name)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self.listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self.listing = False


def _typer(help_text: str | None, **kw: Any) -> typer.Typer:
    """Plain click help and errors: typer's rich help imports rich, markdown-it and pygments
    (~0.4 s of CPU) and would make ``packserve --help`` slower than most commands."""
    return typer.Typer(
        help=help_text,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
        rich_markup_mode=None,
        **kw,
    )


app = _typer(HELP, name="packserve", cls=LazyGroup, epilog="\b\nExit codes:\n" + exit_code_help())
demo_app = _typer("Built-in, self-contained demonstrations.")
deploy_app = _typer(
    "Run or describe deployments of the one server: Ray Serve, KServe manifests, a Docker image."
)
app.add_typer(demo_app, name="demo")
app.add_typer(deploy_app, name="deploy")


def _print_version(value: bool) -> None:
    if value:
        from packserve import __version__

        out().print(f"packserve {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: bool = typer.Option(
        False, "--version", help="Print packserve's version and exit.", is_eager=True,
        callback=_print_version,
    ),
) -> None:
    """Trained model -> safe bundle -> fast, production HTTP inference API."""


def version() -> None:
    """Print packserve's version."""
    from packserve import __version__

    out().print(__version__)


# (group, command name, function): the whole command table.
COMMANDS: list[tuple[typer.Typer, str, Callable[..., Any]]] = [
    (app, "version", version),
    (app, "pack", pack.pack_cmd),
    (app, "inspect", pack.inspect_cmd),
    (app, "sign", signing.sign_cmd),
    (app, "verify", signing.verify_cmd),
    (app, "scan", scan.scan_cmd),
    (app, "bench", bench.bench),
    (app, "locustfile", bench.locustfile),
    (deploy_app, "kserve", deploy.deploy_kserve),
    (deploy_app, "docker", deploy.deploy_docker),
    (deploy_app, "ray", deploy.deploy_ray),
    (demo_app, "run", demo.demo_run),
    (demo_app, "attack", demo.demo_attack),
]
for _group, _name, _fn in COMMANDS:
    _group.command(_name)(mapped(_fn))


__all__ = ["COMMANDS", "LAZY", "app", "mapped"]

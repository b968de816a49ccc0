"""``packserve demo run|attack``: the built-in, self-contained demonstrations."""

from __future__ import annotations

from pathlib import Path

import typer

from packserve.cli.console import out


def demo_run(
    workdir: Path | None = typer.Option(None, help="keep the demo's files here (default: a temp dir)"),
    bench_seconds: float = typer.Option(3.0, min=0.5, help="length of the closing bench"),
    bench_rate: float = typer.Option(
        200.0, min=1.0, help="requests/s offered by the closing open-loop bench"),
    keep: bool = typer.Option(
        False, "--keep", help="keep the temporary folder (bundle, pickles, server log, bench "
        "report); it is removed otherwise"),
) -> None:
    """Train the chapter's model, then pack -> scan -> serve -> predict -> bench -> images, as a report."""
    from packserve.demo import run_demo

    raise typer.Exit(run_demo(workdir, bench_seconds=bench_seconds, bench_rate=bench_rate,
                              keep=keep, console=out()))


def demo_attack() -> None:
    """The chapter's pickle __reduce__ attack, safely: it runs, scan flags it, packserve refuses."""
    from packserve.errors import ExitCode
    from packserve.scan.demo import run_attack_demo

    result = run_attack_demo(lambda line: out().print(line, highlight=False, soft_wrap=True))
    out().print("[green]demo passed[/]" if result.ok else "[bold red]demo FAILED[/]")
    raise typer.Exit(ExitCode.OK if result.ok else ExitCode.FAILED)


__all__ = ["demo_attack", "demo_run"]

"""The ``packserve`` command line: a thin typer layer over the library.

Each command only parses flags and calls the layer that does the work. Errors are
:class:`~packserve.errors.PackserveError` subclasses carrying their own exit code; they are
turned into a one-line message and that exit code in :func:`main`, nowhere else.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Optional, TypeVar

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

from pathlib import Path  # noqa: E402 - section-local import, light


@command("pack")
def pack_cmd(
    src: Path = typer.Argument(..., metavar="SRC", help="Model file: XGBoost .json/.ubj, "
                               "LightGBM .txt, "
                               "CatBoost .cbm; pickle/joblib only via the scanner's safe "
                               "migration."),
    out_dir: Path = typer.Argument(..., metavar="OUT", help="Bundle directory to create."),
    sample: Path = typer.Option(..., "--sample", "-s", help="Sample rows (.csv with optional "
                                "header, or .npy): signature inference + parity check."),
    name: str | None = typer.Option(None, "--name", help="Model name (default: file stem)."),
    version: str = typer.Option("1.0.0", "--version", help="Model version."),
    feature_names: str | None = typer.Option(
        None, "--feature-names", help="Comma-separated feature names (default: CSV header, "
        "else the model's own, else f0..fN)."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
    allow_parity_failure: bool = typer.Option(
        False, "--allow-parity-failure", help="Write the bundle even if parity fails "
        "(the failure is recorded in its manifest)."),
) -> None:
    """Pack a native model file into a verified bundle (ONNX + manifest with parity)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from packserve.errors import OutputExistsError
    from packserve.pack import pack
    from packserve.pack.files import align_sample, load_model_file, load_sample_file
    from packserve.pack.progress import reporting
    from packserve.pack.report import print_summary

    if out_dir.exists() and not force:  # refuse before any slow work
        raise OutputExistsError(f"output directory {out_dir.name!r} already exists (use --force)")
    names = [n.strip() for n in feature_names.split(",")] if feature_names else None
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task(f"loading {src.name}", total=None)

        def show(message: str) -> None:
            bar.update(task, description=message)

        model = load_model_file(src)
        show(f"reading sample {sample.name}")
        table, model_names = align_sample(load_sample_file(sample), model)
        with reporting(show):
            result = pack(model, out_dir, sample=table, name=name or src.stem, version=version,
                          feature_names=names or model_names, force=force,
                          allow_parity_failure=allow_parity_failure)
    print_summary(out, result.manifest)
    out.print(f"[bold]bundle written:[/] {result.path}", highlight=False, soft_wrap=True)


@command("inspect")
def inspect_cmd(
    bundle: Path = typer.Argument(..., help="Bundle directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Summarise a bundle and verify its files' sha256 (exit 5 if tampered)."""
    from packserve.bundle import read_manifest, verify_bundle
    from packserve.errors import IntegrityError
    from packserve.pack.report import print_summary

    manifest = read_manifest(bundle)
    problem: IntegrityError | None = None
    try:
        verify_bundle(bundle, manifest)
    except IntegrityError as exc:
        problem = exc
    if as_json:
        typer.echo(manifest.model_dump_json(indent=2))
    else:
        print_summary(out, manifest, integrity=problem.message if problem else None)
    if problem is not None:
        raise problem

# [scan]


@command("scan")
def scan_cmd(
    paths: list[Path] = typer.Argument(..., help="Files or directories (every file is scanned "
                                       "by content, whatever its extension)."),
    json_out: bool = typer.Option(False, "--json", help="JSON report on stdout."),
    sarif: bool = typer.Option(False, "--sarif", help="SARIF 2.1.0 report on stdout."),
) -> None:
    """Statically scan pickle/joblib/torch/npy files; never executes them.

    Exit code: 0 clean, 1 findings, 2 could not scan (never 0 for anything unknown or broken).
    """
    import json

    from packserve.errors import ConfigError
    from packserve.scan import ScanReport, scan
    from packserve.scan.render import render_table, to_json, to_sarif

    if json_out and sarif:
        raise ConfigError("--json and --sarif are mutually exclusive")
    report = ScanReport()
    for path in paths:
        report.merge(scan(path))
    if json_out:
        typer.echo(json.dumps(to_json(report), indent=2))
    elif sarif:
        typer.echo(json.dumps(to_sarif(report, version=__version__), indent=2))
    else:
        render_table(report, out)
    raise typer.Exit(report.exit_code)


# [serve]


def _serve_signature() -> tuple[inspect.Signature, dict[str, Any]]:
    """``packserve serve`` flags generated from ServeSettings: one flag per field, always in sync.

    Flags default to None so that only flags actually given override ``PACKSERVE_*`` env vars.
    """
    from pathlib import Path as _Path

    from packserve.serve.settings import ServeSettings  # light: pydantic-settings only

    kw = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter(
            "path", kw, default=typer.Argument(
                None, help="a bundle, or a repository folder REPO/<name>/<version>/ "
                "(default: PACKSERVE_MODEL_PATH)", show_default=False),
            annotation=Optional[_Path],  # noqa: UP045 - typer reads this at runtime
        )
    ]
    for name, field in ServeSettings.model_fields.items():
        if name == "model_path":
            continue
        ann = field.annotation
        kind: type = bool if ann is bool else int if ann is int else float if ann is float else str
        flag = "--" + name.replace("_", "-")
        decl = f"{flag}/--no-{name.replace('_', '-')}" if kind is bool else flag
        default = field.default if field.default is not None else None
        shown = "" if name == "api_key" else f" [default: {default}]"
        params.append(
            inspect.Parameter(
                name, kw,
                default=typer.Option(None, decl, help=(field.description or "") + shown,
                                     show_default=False),
                annotation=Optional[kind],  # noqa: UP045
            )
        )
    sig = inspect.Signature(params)
    return sig, {p.name: p.annotation for p in params}


def serve(**flags: Any) -> None:
    """Serve a bundle or a repository of bundles over HTTP (predict, batch, health, metrics)."""
    from packserve.errors import ConfigError
    from packserve.serve.settings import ServeSettings

    path = flags.pop("path", None)
    given = {k: v for k, v in flags.items() if v is not None}
    if path is not None:
        given["model_path"] = path
    try:
        settings = ServeSettings(**given)
    except ValueError as exc:  # pydantic ValidationError: name the flag, not the internals
        first = exc.errors()[0] if hasattr(exc, "errors") else {}
        loc = ".".join(str(x) for x in first.get("loc", ())) or "settings"
        raise ConfigError(f"--{loc.replace('_', '-')}: {first.get('msg', exc)}") from None
    settings.require_model_path()
    if settings.workers > 1:  # a supervisor + N single-process servers on one socket (#9)
        from packserve.serve.workers import run_workers

        code = run_workers(settings)
        if code:
            raise typer.Exit(code)
        return
    from packserve.serve.lifecycle import run

    code = run(settings)
    if code:
        raise typer.Exit(code)


serve.__signature__, serve.__annotations__ = _serve_signature()  # type: ignore[attr-defined]
command("serve")(serve)

# [bench / locustfile]

# [deploy]

# [demo]


@demo_app.command("attack")
def demo_attack() -> None:
    """The chapter's pickle __reduce__ attack, safely: it runs, scan flags it, packserve refuses."""
    from packserve.scan.demo import run_attack_demo

    result = run_attack_demo(lambda line: out.print(line, highlight=False, soft_wrap=True))
    out.print("[green]demo passed[/]" if result.ok else "[bold red]demo FAILED[/]")
    raise typer.Exit(0 if result.ok else 1)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

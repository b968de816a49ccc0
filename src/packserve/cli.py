"""The ``packserve`` command line: a thin typer layer over the library.

Each command only parses flags and calls the layer that does the work. Errors are
:class:`~packserve.errors.PackserveError` subclasses carrying their own exit code; they are
turned into a one-line message and that exit code in :func:`main`, nowhere else.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, TypeVar

import typer

from packserve import __version__
from packserve.errors import PackserveError

if TYPE_CHECKING:
    from rich.console import Console

app = typer.Typer(
    name="packserve",
    help="Trained model -> safe bundle -> fast, production HTTP inference API.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Trained model -> safe bundle -> fast, production HTTP inference API."""


@functools.cache
def _console(stderr: bool = False) -> Console:
    """rich is imported on first output, not at startup: a ``packserve serve`` process never
    prints through it and saves its ~1.5 MiB of resident memory."""
    from rich.console import Console

    return Console(stderr=stderr)


def out() -> Console:
    return _console(False)


def err() -> Console:
    return _console(True)


F = TypeVar("F", bound=Callable[..., Any])


def command(*args: Any, group: typer.Typer | None = None, **kwargs: Any) -> Callable[[F], F]:
    """``app.command`` (or ``group.command``) that turns a PackserveError into its message and
    exit code — the one place the CLI maps errors."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*a: Any, **k: Any) -> Any:
            try:
                return fn(*a, **k)
            except PackserveError as exc:
                err().print(f"[bold red]error:[/] {exc.message}", highlight=False, soft_wrap=True)
                raise typer.Exit(exc.exit_code) from None

        (group or app).command(*args, **kwargs)(wrapper)
        return fn

    return deco


@command()
def version() -> None:
    """Print packserve's version."""
    out().print(__version__)


# --- commands are added below, one section per layer ------------------------------------
# Each section imports its layer lazily inside the command, so `packserve --help` stays fast.

demo_app = typer.Typer(help="Built-in, self-contained demonstrations.", no_args_is_help=True)
app.add_typer(demo_app, name="demo")

# [pack / inspect]



@command("pack")
def pack_cmd(
    src: Path = typer.Argument(..., metavar="SRC", help="Model file: XGBoost .json/.ubj, "
                               "LightGBM .txt, "
                               "CatBoost .cbm; pickle/joblib only via the scanner's safe "
                               "migration."),
    out_dir: Path = typer.Argument(..., metavar="OUT", help="Bundle directory to create."),
    sample: Path = typer.Option(..., "--sample", "-s", help="Sample rows (.csv with optional "
                                "header — empty cells / NA are missing values —, .parquet or "
                                ".npy): signature inference + parity check."),
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
                  console=err(), transient=True) as bar:
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
    print_summary(out(), result.manifest)
    out().print(f"[bold]bundle written:[/] {result.path}", highlight=False, soft_wrap=True)


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
        print_summary(out(), manifest, integrity=problem.message if problem else None)
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
        render_table(report, out())
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
        # parentheses, not brackets: rich would read "[default: x]" as markup and drop it
        shown = "" if name == "api_key" or default is None else f" (default: {default})"
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


@command("bench")
def bench(
    url: str = typer.Argument(..., help="Server base URL, e.g. http://127.0.0.1:8000"),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Model name (/models/NAME/predict)"),
    rate: float | None = typer.Option(
        None, "--rate", "-r", help="Open loop: requests/s (latency from scheduled send time)"),
    concurrency: int | None = typer.Option(
        None, "--concurrency", "-c", help="Closed loop: concurrent requests (default 8)"),
    duration: str | None = typer.Option(
        None, "--duration", "-d", help="Run length (30s; per step with --find-max: 5s)"),
    batch_size: int = typer.Option(
        1, "--batch-size", "-b", help="Rows per request (>1 uses /predict/batch)"),
    bundle: Path | None = typer.Option(
        None, "--bundle", help="Read the signature and example rows from this bundle"),
    pid: int | None = typer.Option(
        None, "--pid", help="Sample server memory/CPU of this pid (+children) via psutil"),
    processes: int = typer.Option(
        1, "--processes", help="Generator processes (when one cannot drive the server)"),
    timeout: str = typer.Option("10s", "--timeout", help="Per-request timeout"),
    max_connections: int = typer.Option(
        512, "--max-connections", help="Open loop: connection pool cap"),
    find_max_: bool = typer.Option(
        False, "--find-max", help="Ramp the rate to the max sustainable throughput"),
    slo_p99: float | None = typer.Option(None, "--slo-p99", help="--find-max: p99 limit in ms"),
    max_error_rate: float = typer.Option(
        0.01, "--max-error-rate", help="--find-max: error-rate limit (0.01 = 1%)"),
    soak_: str | None = typer.Option(
        None, "--soak", help="Sustained load for DURATION; memory growth, leak flag"),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON, not a table"),
    report: Path | None = typer.Option(
        None, "--report", help="Write a self-contained HTML report with plots"),
    seed: int = typer.Option(0, "--seed", help="Seed of the generated inputs"),
) -> None:
    """Load-test a running server: latency percentiles, max throughput, memory under load."""
    from packserve.bench import (
        find_max,
        live_progress,
        render_find_max,
        render_table,
        run_bench,
        to_json,
        write_html,
    )
    from packserve.bench import soak as run_soak
    from packserve.bench.runner import parse_duration
    from packserve.errors import ConfigError

    if find_max_ and soak_ is not None:
        raise ConfigError("--find-max and --soak are separate runs; pick one")
    common: dict[str, Any] = dict(
        model=model, batch_size=batch_size, bundle=bundle, pid=pid, processes=processes,
        timeout=parse_duration(timeout), max_connections=max_connections, seed=seed,
        progress=live_progress(err()),
    )
    result: Any
    if find_max_:
        if concurrency is not None:
            raise ConfigError("--find-max ramps an open-loop rate; --concurrency does not apply")
        result = find_max(url, slo_p99_ms=slo_p99, max_error_rate=max_error_rate,
                          step_duration=parse_duration(duration or "5s"), start_rate=rate,
                          **common)
        table = render_find_max(result)
    elif soak_ is not None:
        result = run_soak(url, parse_duration(soak_), rate=rate, concurrency=concurrency, **common)
        table = render_table(result)
    else:
        result = run_bench(url, rate=rate, concurrency=concurrency,
                           duration=parse_duration(duration or "30s"), **common)
        table = render_table(result)
    if report is not None:
        write_html(result, report, title=f"packserve bench {url}")
        err().print(f"report written to {report}", highlight=False)
    if as_json:
        typer.echo(to_json(result))
    else:
        out().print(table)


@command("locustfile")
def locustfile(
    bundle_or_url: str = typer.Argument(..., help="A bundle directory or a server URL"),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Model name (/models/NAME/predict)"),
    batch_size: int = typer.Option(20, "--batch-size", "-b", help="Rows per batch request"),
) -> None:
    """Write a locust scenario for the model to stdout (predict : batch : health = 3:1:1)."""
    from packserve.bench import locustfile_for

    typer.echo(locustfile_for(bundle_or_url, model=model, batch_size=batch_size), nl=False)


# [deploy]

deploy_app = typer.Typer(
    help="Run or describe deployments of the one server: Ray Serve, KServe manifests, a Docker image.",
    no_args_is_help=True,
)
app.add_typer(deploy_app, name="deploy")


def _deploy_command(name: str) -> Callable[[F], F]:
    return command(name, group=deploy_app)


@_deploy_command("kserve")
def deploy_kserve(
    path: Path = typer.Argument(..., help="a bundle or a repository folder REPO/<name>/<version>/"),
    image: str = typer.Option(..., "--image", help="the packserve image (see `deploy docker`)"),
    out_dir: Path = typer.Option(Path("kserve"), "--out", help="folder for the YAML files"),
    name: Optional[str] = typer.Option(None, help="InferenceService name (default: the model's)"),  # noqa: UP045
    storage_uri: Optional[str] = typer.Option(  # noqa: UP045
        None, help="where KServe fetches the bundle from (default: a placeholder to edit)"),
    cpu: str = typer.Option("1", help="CPU request"),
    memory: str = typer.Option("1Gi", help="memory request"),
    memory_limit: str = typer.Option("2Gi", help="memory limit"),
    min_replicas: int = typer.Option(1, min=0),
    max_replicas: int = typer.Option(3, min=1),
) -> None:
    """Write a KServe ServingRuntime (V2 protocol, port 8080, /mnt/models) and an InferenceService."""
    from packserve.deploy.kserve import write_kserve
    from packserve.deploy.target import inspect_target

    paths = write_kserve(inspect_target(path), out_dir, image=image, name=name, storage_uri=storage_uri,
                         cpu=cpu, memory=memory, memory_limit=memory_limit,
                         min_replicas=min_replicas, max_replicas=max_replicas)
    for p in paths:
        out().print(f"wrote {p}", highlight=False)


@_deploy_command("docker")
def deploy_docker(
    path: Path = typer.Argument(..., help="a bundle or a repository folder REPO/<name>/<version>/"),
    out_dir: Path = typer.Option(Path("packserve-image"), "--out", help="the build context to write"),
    wheel: Optional[Path] = typer.Option(  # noqa: UP045
        None, help="a packserve wheel to install (default: packserve==VERSION from the index)"),
    python: str = typer.Option("3.11", help="python:<version>-slim base image"),
    force: bool = typer.Option(False, "--force", help="replace a non-empty --out folder"),
) -> None:
    """Write a Docker build context: Dockerfile, .dockerignore and a copy of the models."""
    from packserve.deploy.docker import write_docker
    from packserve.deploy.target import inspect_target

    write_docker(inspect_target(path), out_dir, python=python, wheel=wheel, force=force)
    out().print(f"wrote {out_dir}/Dockerfile, .dockerignore, model/ — build: docker build -t IMAGE {out_dir}",
              highlight=False)


@_deploy_command("ray")
def deploy_ray(
    path: Path = typer.Argument(..., help="a bundle or a repository folder REPO/<name>/<version>/"),
    replicas: int = typer.Option(1, min=1, help="replicas (each runs create_app with its own batcher)"),
    address: Optional[str] = typer.Option(  # noqa: UP045
        None, help="join this Ray cluster (default: start a local head on this machine); a "
        "token-auth cluster needs RAY_AUTH_MODE=token and its token, as any Ray driver"),
    host: str = typer.Option("127.0.0.1", help="Ray Serve HTTP proxy host"),
    port: int = typer.Option(8000, min=0, max=65535, help="Ray Serve HTTP proxy port"),
    num_cpus: Optional[int] = typer.Option(None, help="CPUs of a local head (default: all)"),  # noqa: UP045
    replica_cpus: float = typer.Option(1.0, min=0.0, help="CPUs reserved per replica"),
    max_ongoing_requests: int = typer.Option(64, min=1, help="concurrent requests per replica"),
    max_queued_requests: int = typer.Option(
        256, min=-1, help="requests waiting for a replica before 503 (-1 = unbounded)"),
) -> None:
    """Serve with Ray Serve replicas until SIGTERM/SIGINT (other settings: PACKSERVE_* env)."""
    from packserve.deploy.ray import RayOptions, run_ray

    code = run_ray(path, RayOptions(
        replicas=replicas, address=address, host=host, port=port, num_cpus=num_cpus,
        replica_cpus=replica_cpus, max_ongoing_requests=max_ongoing_requests,
        max_queued_requests=max_queued_requests))
    if code:
        raise typer.Exit(code)


# [demo]


@command("run", group=demo_app)
def demo_run(
    workdir: Path | None = typer.Option(None, help="keep the demo's files here (default: a temp dir)"),
    bench_seconds: float = typer.Option(3.0, min=0.5, help="length of the closing bench"),
) -> None:
    """Train the chapter's model, then pack -> scan -> serve -> predict -> bench, as a report."""
    from packserve.demo import run_demo

    raise typer.Exit(run_demo(workdir, bench_seconds=bench_seconds, console=out()))


@command("attack", group=demo_app)
def demo_attack() -> None:
    """The chapter's pickle __reduce__ attack, safely: it runs, scan flags it, packserve refuses."""
    from packserve.scan.demo import run_attack_demo

    result = run_attack_demo(lambda line: out().print(line, highlight=False, soft_wrap=True))
    out().print("[green]demo passed[/]" if result.ok else "[bold red]demo FAILED[/]")
    raise typer.Exit(0 if result.ok else 1)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

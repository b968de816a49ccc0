"""``packserve bench`` and ``packserve locustfile``: load-test a running server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from packserve.cli.console import err, out


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
    images: Path | None = typer.Option(
        None, "--images", metavar="DIR",
        help="Send the image files of DIR (raw image/jpeg|png|webp bodies; multipart with "
        "--batch-size > 1). An image bundle given with --bundle gets JPEGs generated at its "
        "input size without this"),
    generated_images: bool = typer.Option(
        False, "--generated-images",
        help="Send generated JPEGs (size from --bundle or the server's V2 input shape)"),
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
        images=_images(images, generated_images), progress=live_progress(err()),
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


def locustfile(
    bundle_or_url: str = typer.Argument(..., help="A bundle directory or a server URL"),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Model name (/models/NAME/predict)"),
    batch_size: int | None = typer.Option(
        None, "--batch-size", "-b", help="Rows (images) per batch request; default 20 (4)"),
    images: Path | None = typer.Option(
        None, "--images", metavar="DIR",
        help="Embed the image files of DIR (an image bundle gets generated JPEGs without this)"),
    generated_images: bool = typer.Option(
        False, "--generated-images", help="Embed generated JPEGs (for a server URL)"),
) -> None:
    """Write a locust scenario for the model to stdout (predict : batch : health = 3:1:1)."""
    from packserve.bench import locustfile_for

    typer.echo(locustfile_for(bundle_or_url, model=model, batch_size=batch_size,
                              images=_images(images, generated_images)), nl=False)


def _images(folder: Path | None, generated: bool) -> Path | bool | None:
    """--images DIR / --generated-images -> run_bench's ``images`` (None: decide by bundle)."""
    from packserve.errors import ConfigError

    if folder is not None and generated:
        raise ConfigError("--images DIR and --generated-images: pick one")
    return folder if folder is not None else (True if generated else None)


__all__ = ["bench", "locustfile"]

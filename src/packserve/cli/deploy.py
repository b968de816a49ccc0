"""``packserve deploy kserve|docker|ray``: deployments of the one server."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from packserve.cli.console import out


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
    trusted_key: list[Path] = typer.Option(
        [], "--trusted-key", help="serve only bundles signed by this public key / CA certificate "
        "(PEM; repeatable): a ConfigMap holds it, the runtime enforces it; bundles are verified now"),
) -> None:
    """Write a KServe ServingRuntime (V2 protocol, port 8080, /mnt/models) and an InferenceService."""
    from packserve.deploy.kserve import write_kserve
    from packserve.deploy.target import inspect_target

    paths = write_kserve(inspect_target(path), out_dir, image=image, name=name, storage_uri=storage_uri,
                         cpu=cpu, memory=memory, memory_limit=memory_limit,
                         min_replicas=min_replicas, max_replicas=max_replicas, trusted_keys=trusted_key)
    for p in paths:
        out().print(f"wrote {p}", highlight=False)


def deploy_docker(
    path: Path = typer.Argument(..., help="a bundle or a repository folder REPO/<name>/<version>/"),
    out_dir: Path = typer.Option(Path("packserve-image"), "--out", help="the build context to write"),
    wheel: Optional[Path] = typer.Option(  # noqa: UP045
        None, help="a packserve wheel to install (default: packserve==VERSION from the index)"),
    python: str = typer.Option("3.11", help="python:<version>-slim base image"),
    force: bool = typer.Option(False, "--force", help="replace a non-empty --out folder"),
    trusted_key: list[Path] = typer.Option(
        [], "--trusted-key", help="serve only bundles signed by this public key / CA certificate "
        "(PEM; repeatable): copied into the image and enforced; bundles are verified now"),
    server: str = typer.Option(
        "uvicorn", help="the image's HTTP engine: uvicorn, or granian (its extra is installed)"),
) -> None:
    """Write a Docker build context: Dockerfile, .dockerignore and a copy of the models."""
    from packserve.deploy.docker import write_docker
    from packserve.deploy.target import inspect_target

    write_docker(inspect_target(path), out_dir, python=python, wheel=wheel, force=force,
                 trusted_keys=trusted_key, server=server)
    out().print(f"wrote {out_dir}/Dockerfile, .dockerignore, model/ — build: docker build -t IMAGE {out_dir}",
              highlight=False)


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


__all__ = ["deploy_docker", "deploy_kserve", "deploy_ray"]

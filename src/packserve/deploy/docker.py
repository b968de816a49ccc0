"""A container image recipe: build context with a Dockerfile, a ``.dockerignore`` and the models.

Choices, each for a reason:
* ``python:<ver>-slim``: glibc (onnxruntime/torch wheels need it), no compiler toolchain.
* only the extras the bundles need (ONNX: none, onnxruntime is core; TorchScript: ``torch``,
  from PyTorch's CPU index so the image does not carry CUDA; image bundles: ``images``) and
  the HTTP engine's (``--server granian``: the ``granian`` extra, and ``PACKSERVE_SERVER``);
* a non-root user that owns nothing it could overwrite (the models are read-only root-owned);
* configuration only through ``PACKSERVE_*`` env values (the one settings class), so
  ``docker run -e PACKSERVE_API_KEY=...`` overrides anything;
* exec-form ``CMD`` so ``packserve serve`` is PID 1 and receives SIGTERM itself (drain);
  one server process per container — scale with replicas, not ``--workers``;
* ``HEALTHCHECK`` on readiness, with the Python the image already has (slim has no curl);
* with trusted keys, the public keys go to ``/etc/packserve/trusted/`` (root-owned) and
  ``PACKSERVE_TRUSTED_KEYS`` names them: the server refuses any bundle they did not sign.
  Each bundle's ``model.sig`` travels in ``model/`` and is verified while writing the context.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from packserve import __version__
from packserve.deploy.target import Target, check_signatures, trusted_file_names
from packserve.errors import ConfigError, OutputExistsError
from packserve.serve.engines import ENGINES
from packserve.signing import load_trust_anchors

IMAGE_MODEL_DIR = "/models"
IMAGE_TRUST_DIR = "/etc/packserve/trusted"
IMAGE_PORT = 8080
IMAGE_UID = 10001
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH_PIN = "torch==2.13.0"

HEALTHCHECK_SCRIPT = (
    "import os, sys, urllib.request; "
    "port = os.environ.get('PACKSERVE_PORT', '8080'); "
    "r = urllib.request.urlopen(f'http://127.0.0.1:{port}/health/ready', timeout=2); "
    "sys.exit(0 if r.status == 200 else 1)"
)

DOCKERIGNORE = """\
# Only the models (and an optional local packserve wheel) go into the build context.
*
!model/
!model/**
!wheels/
!wheels/*.whl
!trust/
!trust/*
**/__pycache__
**/*.pyc
**/.DS_Store
"""


def image_env(trusted: Sequence[str] = (), server: str = "uvicorn") -> dict[str, str]:
    """``PACKSERVE_*`` values baked into the image (fields of ServeSettings); ``trusted``: the
    file names of the trusted keys under ``IMAGE_TRUST_DIR``; ``server``: the HTTP engine."""
    from packserve.serve.settings import ServeSettings

    fields = {"model_path": IMAGE_MODEL_DIR, "host": "0.0.0.0", "port": str(IMAGE_PORT),  # noqa: S104
              "server": server, "shutdown_grace_s": "2", "drain_timeout_s": "20"}
    if trusted:
        fields["trusted_keys"] = ",".join(f"{IMAGE_TRUST_DIR}/{n}" for n in trusted)
    unknown = set(fields) - set(ServeSettings.model_fields)
    assert not unknown, unknown
    return {f"PACKSERVE_{k.upper()}": v for k, v in fields.items()}


def image_extras(target: Target, server: str = "uvicorn") -> tuple[str, ...]:
    """The packserve extras the image installs: what the bundles need, and what the engine
    needs (uvicorn is core; granian is the ``granian`` extra)."""
    if server not in ENGINES:
        raise ConfigError(f"--server {server!r}: choose one of {', '.join(ENGINES)}")
    return target.extras + (("granian",) if server == "granian" else ())


def dockerfile(
    target: Target, *, python: str = "3.11", wheel: str | None = None, trusted: Sequence[str] = (),
    server: str = "uvicorn",
) -> str:
    """The Dockerfile text. ``wheel``: file name of a packserve wheel under ``wheels/`` in the
    build context (default: ``packserve==<this version>`` from the configured package index).
    ``trusted``: file names of trusted public keys under ``trust/`` in the context.
    ``server``: the HTTP engine the image runs (its extra is installed, its name baked in)."""
    wanted = image_extras(target, server)
    extras = f"[{','.join(wanted)}]" if wanted else ""
    spec = f"/tmp/wheels/{wheel}{extras}" if wheel else f"packserve{extras}=={__version__}"  # noqa: S108
    lines = [
        "# syntax=docker/dockerfile:1",
        f"# packserve {__version__}: {len(target.models)} model(s): "
        + ", ".join(f"{m.name}/{m.version} ({m.format})" for m in target.models),
        f"FROM python:{python}-slim",
        "",
        "ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \\",
        "    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1",
        "",
        f"RUN groupadd --system --gid {IMAGE_UID} packserve \\",
        f" && useradd --system --uid {IMAGE_UID} --gid packserve --no-create-home \\",
        "      --home-dir /nonexistent --shell /usr/sbin/nologin packserve",
        "",
    ]
    if wheel:
        lines += ["COPY wheels/ /tmp/wheels/"]
    install = ["RUN pip install"]  # pyc compiled at build: faster start (the user cannot write them)
    if "torch" in target.extras:  # CPU build: the default index would pull CUDA (GBs)
        lines += [f"RUN pip install --index-url {TORCH_CPU_INDEX} '{TORCH_PIN}'"]
    install.append(f"'{spec}'")
    lines += [" ".join(install) + (" && rm -rf /tmp/wheels" if wheel else ""), ""]
    lines += [
        "# models: root-owned, readable (not writable) by the server user",
        f"COPY --chown=root:root model/ {IMAGE_MODEL_DIR}/",
        f"RUN chmod -R a+rX,go-w {IMAGE_MODEL_DIR}",
        "",
    ]
    signed = sum(m.signed for m in target.models)
    if trusted:
        lines += [
            f"# signatures enforced: only bundles signed by {len(trusted)} trusted key(s) are served",
            f"COPY --chown=root:root trust/ {IMAGE_TRUST_DIR}/",
            f"RUN chmod -R a+rX,go-w {IMAGE_TRUST_DIR}",
            "",
        ]
    elif signed:
        lines += [f"# {signed} of {len(target.models)} bundle(s) signed (model.sig), signatures NOT "
                  "enforced: set PACKSERVE_TRUSTED_KEYS (or deploy docker --trusted-key)", ""]
    env = image_env(trusted, server)
    lines += ["ENV " + " \\\n    ".join(f"{k}={v}" for k, v in env.items()), ""]
    lines += [
        f"USER {IMAGE_UID}:{IMAGE_UID}",
        f"EXPOSE {IMAGE_PORT}",
        "STOPSIGNAL SIGTERM",
        "HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \\",
        "  CMD " + json.dumps(["python", "-c", HEALTHCHECK_SCRIPT]),
        "# one server process per container (PID 1 gets SIGTERM and drains)",
        'CMD ["packserve", "serve"]',
        "",
    ]
    return "\n".join(lines)


def write_docker(
    target: Target, out_dir: str | Path, *, python: str = "3.11", wheel: str | Path | None = None,
    force: bool = False, trusted_keys: Sequence[str | Path] = (), server: str = "uvicorn",
) -> list[Path]:
    """Write the build context: ``Dockerfile``, ``.dockerignore``, ``model/`` (a copy of the
    bundle or repository), with ``wheel`` ``wheels/<file>``, with ``trusted_keys`` ``trust/``
    (and every copied bundle's signature verified). Returns the written files."""
    image_extras(target, server)  # an unknown engine fails before anything is written
    anchors = load_trust_anchors(trusted_keys)  # a bad key file fails before anything is written
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise OutputExistsError(f"{out} is not empty (use --force to replace it)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(target.path, out / "model",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
    try:
        check_signatures(out / "model", anchors)  # the copy: exactly what the image will hold
    except Exception:
        shutil.rmtree(out)
        raise
    names = trusted_file_names(anchors)
    if anchors:
        (out / "trust").mkdir()
        for anchor, name in zip(anchors, names, strict=True):
            shutil.copyfile(anchor.path, out / "trust" / name)
    wheel_name = None
    if wheel is not None:
        src = Path(wheel)
        (out / "wheels").mkdir()
        shutil.copy2(src, out / "wheels" / src.name)
        wheel_name = src.name
    (out / "Dockerfile").write_text(
        dockerfile(target, python=python, wheel=wheel_name, trusted=names, server=server))
    (out / ".dockerignore").write_text(DOCKERIGNORE)
    return [out / "Dockerfile", out / ".dockerignore", out / "model"] + ([out / "trust"] if anchors else [])


__all__ = [
    "DOCKERIGNORE", "IMAGE_MODEL_DIR", "IMAGE_PORT", "IMAGE_TRUST_DIR", "dockerfile", "image_env",
    "image_extras", "write_docker",
]

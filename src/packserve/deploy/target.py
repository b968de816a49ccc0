"""What is being deployed: a bundle or a repository, its models, and what the image needs.

The deploy layer sits above serve: it reuses serve's discovery rule (a bundle, or
``REPO/<name>/<version>/``) so a deployment serves exactly what ``packserve serve`` would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from packserve.errors import ConfigError


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str
    format: str  # "onnx" | "torchscript" (manifest field)


@dataclass(frozen=True)
class Target:
    path: Path
    single: bool
    models: tuple[ModelRef, ...]

    @property
    def extras(self) -> tuple[str, ...]:
        """packserve extras the server needs for these bundles (ONNX needs none: onnxruntime is core)."""
        return ("torch",) if any(m.format == "torchscript" for m in self.models) else ()

    @property
    def default_name(self) -> str:
        """A DNS-1123 name for the deployment: the model's name, or the repository folder's."""
        raw = self.models[0].name if len({m.name for m in self.models}) == 1 else self.path.name
        return dns_name(raw)


def dns_name(raw: str) -> str:
    """Kubernetes object names: lower-case alphanumerics and '-', start/end alphanumeric."""
    name = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")[:63].rstrip("-")
    if not name:
        raise ConfigError(f"cannot make a Kubernetes name out of {raw!r}: pass --name")
    return name


def inspect_target(path: str | Path) -> Target:
    """Read the manifests (no model is loaded). Failed bundles in a repository are refused:
    an image or a runtime should not ship something that cannot serve."""
    from packserve.serve.registry import discover

    root = Path(path)
    found, single = discover(root)
    broken = [f"{d.name}/{d.version}: {d.error}" for d in found if d.manifest is None]
    if broken:
        raise ConfigError("unreadable bundle(s): " + "; ".join(broken))
    models = tuple(
        ModelRef(d.name, d.version, d.manifest.format) for d in found if d.manifest is not None
    )
    return Target(root.resolve(), single, models)


__all__ = ["ModelRef", "Target", "dns_name", "inspect_target"]

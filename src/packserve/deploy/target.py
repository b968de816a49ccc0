"""What is being deployed: a bundle or a repository, its models, and what the image needs.

The deploy layer sits above serve: it reuses serve's discovery rule (a bundle, or
``REPO/<name>/<version>/``) so a deployment serves exactly what ``packserve serve`` would.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from packserve.errors import ConfigError
from packserve.signing import SIGNATURE_NAME, TrustAnchor, load_trust_anchors, verify_signature


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str
    format: str  # "onnx" | "torchscript" (manifest field)
    signed: bool = False  # the bundle carries a model.sig (not verified here)
    images: bool = False  # an image bundle (#17): the server decodes images with Pillow


@dataclass(frozen=True)
class Target:
    path: Path
    single: bool
    models: tuple[ModelRef, ...]

    @property
    def extras(self) -> tuple[str, ...]:
        """packserve extras the server needs for these bundles (ONNX needs none: onnxruntime is
        core; TorchScript needs torch; image bundles need Pillow and multipart parsing)."""
        need = {"torch": any(m.format == "torchscript" for m in self.models),
                "images": any(m.images for m in self.models)}
        return tuple(extra for extra, needed in need.items() if needed)

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
        ModelRef(d.name, d.version, d.manifest.format, (d.path / SIGNATURE_NAME).is_file(),
                 d.manifest.preprocess is not None)
        for d in found if d.manifest is not None
    )
    return Target(root.resolve(), single, models)


def check_signatures(path: Path, trusted: Sequence[str | Path | TrustAnchor]) -> tuple[TrustAnchor, ...]:
    """Verify every bundle under ``path`` as ``serve --trusted-key`` will: a deployment that
    enforces signatures must not ship a bundle its server would refuse. Returns the anchors."""
    from packserve.serve.registry import discover

    anchors = load_trust_anchors(trusted)
    if anchors:
        for d in discover(path)[0]:
            verify_signature(d.path, anchors)
    return anchors


def trusted_file_names(anchors: Sequence[TrustAnchor]) -> list[str]:
    """File names for the trusted keys inside an image or a ConfigMap: safe and distinct."""
    names: list[str] = []
    for i, a in enumerate(anchors, 1):
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", a.path.name).strip(".-") or "key.pem"
        names.append(name if name not in names else f"{i}-{name}")
    return names


__all__ = ["ModelRef", "Target", "check_signatures", "dns_name", "inspect_target", "trusted_file_names"]

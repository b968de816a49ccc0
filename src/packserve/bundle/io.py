"""Bundle directories on disk: write one atomically, read its manifest, verify its files.

A bundle is the only thing that crosses from ``pack`` to ``runtime``: ``pack`` stages the
artifact next to the target and :func:`write_bundle` hashes it, writes the manifest and
renames the directory into place; a loader calls :func:`verify_bundle` (sizes and sha256 of
every file) before any artifact byte reaches a parser.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path, PurePosixPath

from pydantic import ValidationError

from packserve.bundle.manifest import MANIFEST_NAME, FileEntry, Manifest
from packserve.errors import BundleError, IntegrityError, OutputExistsError


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _safe_relpath(name: str) -> PurePosixPath:
    """Reject manifest file names that would escape the bundle directory."""
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or not p.parts or "\\" in name:
        raise IntegrityError(f"manifest lists an unsafe file name: {name!r}")
    return p


def refuse_existing(out_dir: str | os.PathLike[str], *, force: bool) -> None:
    """Refuse an existing ``out_dir`` unless ``force`` (checked before any slow work, too)."""
    if Path(out_dir).exists() and not force:
        raise OutputExistsError(f"output directory '{out_dir}' already exists (use --force / force=True)")


def prepare_output_dir(out_dir: str | os.PathLike[str], *, force: bool) -> Path:
    """Return a fresh staging directory next to ``out_dir``; refuse an existing target."""
    out = Path(out_dir)
    refuse_existing(out, force=force)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.packserve-tmp"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    return staging


def write_bundle(staging: Path, out_dir: str | os.PathLike[str], manifest: Manifest) -> Path:
    """Hash every artifact in ``staging``, write the manifest, then move it into place.

    Writing into a staging directory and renaming means a failed pack never leaves a
    half-written bundle where a server might pick it up.
    """
    out = Path(out_dir)
    files: dict[str, FileEntry] = {}
    for path in sorted(staging.rglob("*")):
        if path.is_file() and path.name != MANIFEST_NAME:
            rel = path.relative_to(staging).as_posix()
            files[rel] = FileEntry(sha256=sha256_file(path), size=path.stat().st_size)
    if manifest.artifact not in files:
        raise BundleError(f"artifact {manifest.artifact!r} was not written")
    manifest.files = files
    (staging / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return out


def read_manifest(bundle_dir: str | os.PathLike[str]) -> Manifest:
    path = Path(bundle_dir) / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"not a packserve bundle: no {MANIFEST_NAME} in '{bundle_dir}'")
    try:
        raw = json.loads(path.read_text())
        return Manifest.model_validate(raw)
    except (ValueError, ValidationError) as exc:
        first = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise BundleError(f"invalid bundle manifest: {first}") from exc


def verify_bundle(bundle_dir: str | os.PathLike[str], manifest: Manifest | None = None) -> Manifest:
    """Check every file's size and sha256 against the manifest; raise on any mismatch.

    Called before any artifact byte is handed to a parser (ONNX Runtime, torch.jit).
    """
    root = Path(bundle_dir)
    m = manifest if manifest is not None else read_manifest(root)
    if not m.files:
        raise IntegrityError("manifest lists no files")
    if m.artifact not in m.files:
        raise IntegrityError(f"artifact {m.artifact!r} is not covered by the manifest's hashes")
    for name, entry in m.files.items():
        path = root.joinpath(*_safe_relpath(name).parts)
        if not path.is_file():
            raise IntegrityError(f"bundle file {name!r} is missing")
        if path.stat().st_size != entry.size:
            raise IntegrityError(f"bundle file {name!r} has the wrong size (tampered or truncated)")
        if sha256_file(path) != entry.sha256:
            raise IntegrityError(f"bundle file {name!r} does not match its sha256 (tampered)")
    return m


__all__ = [
    "prepare_output_dir",
    "read_manifest",
    "refuse_existing",
    "sha256_file",
    "verify_bundle",
    "write_bundle",
]

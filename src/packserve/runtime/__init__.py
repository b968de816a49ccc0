"""Load a bundle into a Predictor. No HTTP here: ``serve`` builds on this layer."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from packserve.bundle import Manifest, read_manifest, verify_bundle
from packserve.errors import BundleError
from packserve.runtime.base import Predictor, postprocess
from packserve.runtime.inputs import Feeds, concat_feeds, feeds_rows, rows_to_feeds
from packserve.runtime.onnx import RuntimeOptions
from packserve.runtime.prediction import Prediction
from packserve.runtime.tensors import (
    InputChecker,
    TensorInputs,
    example_feeds,
    same_batch,
    shape_key,
)
from packserve.signing import TrustAnchor, verify_signature


def load(
    bundle_dir: str | os.PathLike[str],
    options: RuntimeOptions | None = None,
    *,
    trusted_keys: Sequence[str | os.PathLike[str] | TrustAnchor] = (),
    **kwargs: Any,
) -> Predictor:
    """Verify the signature (with ``trusted_keys``) and every file's sha256, then open it.

    Nothing is parsed before verification passes: a tampered artifact never reaches
    ONNX Runtime or torch. With ``trusted_keys`` (EC public keys / CA certificates, PEM)
    an unsigned bundle, or one not signed by one of them, is refused the same way.
    ``kwargs`` are :class:`RuntimeOptions` fields.
    """
    root = Path(bundle_dir)
    opts = options or RuntimeOptions(**kwargs)
    if trusted_keys:
        verify_signature(root, trusted_keys)
    manifest = verify_bundle(root, read_manifest(root))
    return _open(root, manifest, opts)


def _open(root: Path, manifest: Manifest, opts: RuntimeOptions) -> Predictor:
    artifact = root / manifest.artifact
    if manifest.format == "onnx":
        from packserve.runtime.onnx import OnnxPredictor

        return OnnxPredictor(manifest, artifact, opts)
    if manifest.format == "torchscript":
        from packserve.runtime.torchscript import TorchScriptPredictor

        return TorchScriptPredictor(manifest, artifact, opts)
    raise BundleError(f"unknown artifact format {manifest.format!r}")  # pragma: no cover


__all__ = [
    "Feeds",
    "InputChecker",
    "Prediction",
    "Predictor",
    "RuntimeOptions",
    "TensorInputs",
    "concat_feeds",
    "example_feeds",
    "feeds_rows",
    "load",
    "postprocess",
    "rows_to_feeds",
    "same_batch",
    "shape_key",
]

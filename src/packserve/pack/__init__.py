"""``pack``: trained model -> bundle (safe artifact + manifest), with measured parity.

One module per framework family (:mod:`packserve.pack.families`, one registry line each)
implements :class:`~packserve.pack.family.Family`; the common flow (sample, staging, export,
parity, manifest, atomic write) is :func:`packserve.pack.flow.run`. :func:`pack` only
dispatches (and signs). Families are detected from the model's class hierarchy *by module
name*, so no framework is imported unless the model is one of its own.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

from packserve.errors import UnsupportedModelError
from packserve.pack import flow
from packserve.pack.build import Export, PackResult
from packserve.pack.families import SUPPORTED, family_for
from packserve.pack.family import Attempt, ExportJob, Family
from packserve.pack.images import attach_images, check_preprocess, spec_fields
from packserve.pack.onnx_model import OnnxModel


def framework_of(model: Any) -> str:
    """Return 'torch' | 'xgboost' | 'lightgbm' | 'catboost' | 'sklearn' without imports."""
    roots = [c.__module__.split(".", 1)[0] for c in type(model).__mro__]
    for fam in ("torch", "xgboost", "lightgbm", "catboost", "sklearn"):
        if fam in roots:
            return fam
    raise UnsupportedModelError(
        f"cannot pack a {type(model).__module__}.{type(model).__qualname__}; supported: {SUPPORTED}"
    )


def pack(
    model: Any,
    out_dir: str | os.PathLike[str],
    *,
    sample: Any,
    name: str | None = None,
    version: str = "1.0.0",
    feature_names: list[str] | None = None,
    force: bool = False,
    allow_parity_failure: bool = False,
    example_rows: bool = True,
    sign_key: str | os.PathLike[str] | None = None,
    sign_certificate: str | os.PathLike[str] | None = None,
    sign_chain: Sequence[str | os.PathLike[str]] = (),
    preprocess: Mapping[str, Any] | Any = None,
    **options: Any,
) -> PackResult:
    """Export ``model`` to a bundle in ``out_dir`` and prove parity on ``sample``.

    If parity fails, nothing is written and :class:`~packserve.errors.ParityError` says by
    how much; ``allow_parity_failure=True`` writes the bundle with the failure recorded.
    Framework-specific ``options`` are passed to the family's packer: scikit-learn /
    XGBoost / LightGBM estimators take ``target_opset`` (dict) and ``double`` (force float64
    or float32 inputs instead of "float32, then float64 if that fails parity"); torch takes
    ``format``, ``method``, ``task`` (incl. ``'tensor'``), ``output``, ``classes``,
    ``dynamic_axes``, ``value_ranges``, ``input_names`` (tensor models: any-rank samples, tuples
    or mappings of inputs, ``torch.export.ExportedProgram``). A path ending in ``.onnx`` packs
    that ONNX file (``sample``: arrays or an ``.npz`` keyed by input name; ``expected``: the
    source framework's outputs; ``task``, ``classes``, ``probability_output``). Phases are announced through
    :func:`packserve.pack.progress.reporting` (the CLI's progress display uses it).

    ``example_rows=False`` keeps the sample's rows out of the bundle: by default a few are
    stored as ``examples`` (the server's OpenAPI example, ``bench --bundle`` inputs), which
    is real data; without them those fall back to placeholder/synthetic values.

    ``sign_key`` (an EC private key, PEM) signs the finished bundle (``model.sig``, the
    OpenSSF model-signing format; with ``sign_certificate``/``sign_chain`` by certificate
    chain). The key is checked before packing; if signing fails the bundle is removed, so
    no unsigned bundle is left where a signed one was asked for.

    ``preprocess`` (image classifiers, #17): the :class:`~packserve.bundle.ImagePreprocess`
    fields (``input`` defaults to the single input's name), or a torchvision
    ``transforms.Compose`` of the usual evaluation transforms (:mod:`.images.transforms`); checked
    against the input tensor and recorded in the manifest, so the server accepts encoded
    images. The whole image path (decode + preprocessing + artifact) is then compared with
    the eager model fed by an independent Pillow + NumPy reference on generated images
    (:mod:`.images.parity`); the result is in ``parity.checks``, a mismatch fails the pack.
    """
    onnx_file = OnnxModel.of(model)  # bring your own ONNX: a path ending in .onnx
    if onnx_file is not None:
        model = onnx_file
        name = name or onnx_file.path.stem
    family = family_for(model)
    image_notes: list[str] = []
    if preprocess is not None:
        preprocess, image_notes = spec_fields(preprocess)
        check_preprocess(preprocess, preprocess.get("input", "image"))
    if sign_key is not None:
        from packserve.signing import check_private_key

        check_private_key(sign_key)
    name = name or type(model).__name__.lower()
    result = flow.run(
        family, model, out_dir, sample=sample, name=name, version=version,
        feature_names=feature_names, force=force, allow_parity_failure=allow_parity_failure,
        options=options, example_rows=example_rows,
    )
    if preprocess is not None:
        result = dataclasses.replace(result, manifest=attach_images(
            result.path, model, preprocess, notes=image_notes,
            allow_parity_failure=allow_parity_failure))
    if sign_key is None:
        return result
    from packserve.signing import sign_bundle

    try:
        info = sign_bundle(result.path, sign_key, certificate=sign_certificate, chain=sign_chain)
    except BaseException:
        shutil.rmtree(result.path, ignore_errors=True)
        raise
    return dataclasses.replace(result, signature=info)


__all__ = [
    "SUPPORTED", "Attempt", "Export", "ExportJob", "Family", "PackResult", "framework_of", "pack",
]

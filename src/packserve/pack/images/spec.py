"""Record an image preprocessing spec in a freshly packed bundle (#17), then prove it.

The spec (a mapping, or a torchvision ``Compose`` translated by :mod:`.transforms`) is checked
on its own before the model is exported (a typo costs no export), against the bundle's single
input tensor afterwards, and finally the whole image path -- the server's decode +
preprocessing + artifact -- is compared with a reference on generated images
(:mod:`.parity`). The manifest is rewritten in place: its file hashes cover the
artifact, not the manifest, and signing happens after this.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from packserve.bundle import MANIFEST_NAME, ImagePreprocess, Manifest, read_manifest
from packserve.errors import PackError, ParityError
from packserve.pack.images import parity
from packserve.pack.images.reference import probe_images, reference_input, within_limits
from packserve.pack.images.transforms import is_transform, translate
from packserve.pack.progress import step


def spec_fields(preprocess: Any) -> tuple[dict[str, Any], list[str]]:
    """``preprocess=`` as spec fields plus manifest notes: a mapping as it is, a torchvision
    transform pipeline translated (an unknown transform is refused with its name)."""
    if isinstance(preprocess, Mapping):
        return dict(preprocess), []
    if is_transform(preprocess):
        t = translate(preprocess)
        return t.spec, t.notes
    raise PackError(f"preprocess must be a mapping of spec fields or a torchvision Compose, "
                    f"not {type(preprocess).__name__}")


def check_preprocess(preprocess: Mapping[str, Any], input_name: str | None = None) -> ImagePreprocess:
    """Validate the user's ``preprocess=`` mapping; :class:`PackError` names the field."""
    fields = dict(preprocess)
    fields.setdefault("input", input_name or "")
    try:
        return ImagePreprocess.model_validate(fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise PackError(f"preprocess{'.' + loc if loc else ''}: {msg}") from None


def image_sample(preprocess: Mapping[str, Any]) -> np.ndarray:
    """A pack sample for an image model given no sample: the generated probe images, read by
    the reference pipeline (those within the spec's limits), as one batch."""
    spec = check_preprocess(preprocess, preprocess.get("input", "image"))
    blobs = [b for _, b in probe_images() if within_limits(b, spec)]
    if not blobs:
        raise PackError("preprocess: every generated image exceeds max_bytes / max_pixels; "
                        "give a --sample")
    return np.stack([reference_input(b, spec) for b in blobs])


def record_preprocess(
    bundle: Path, preprocess: Mapping[str, Any], notes: list[str] | None = None
) -> Manifest:
    """Check ``preprocess`` against the packed bundle and write it into its manifest.

    On a mismatch the bundle is removed: a bundle that cannot take the images its owner
    meant to send must not be left where a server would pick it up.
    """
    try:
        manifest = read_manifest(bundle)
        names = [t.name for t in manifest.inputs]
        if manifest.signature != "tensor" or len(names) != 1:
            raise PackError(
                "preprocess needs a tensor model with one image input "
                f"(this bundle takes {names or [f.name for f in manifest.features]})"
            )
        spec = check_preprocess(preprocess, names[0])
        data = manifest.model_dump()
        data["preprocess"] = spec.model_dump()
        data["notes"] = [*data["notes"], *(notes or [])]
        try:
            updated = Manifest.model_validate(data)
        except ValidationError as exc:
            msg = str(exc.errors()[0]['msg']).removeprefix('Value error, ')
            raise PackError(f"preprocess: {msg}") from None
        (bundle / MANIFEST_NAME).write_text(updated.model_dump_json(indent=2) + "\n")
        return updated
    except BaseException:
        shutil.rmtree(bundle, ignore_errors=True)
        raise


def attach_images(
    bundle: Path, model: Any, preprocess: Mapping[str, Any], *, notes: list[str] | None = None,
    allow_parity_failure: bool = False,
) -> Manifest:
    """Record the spec, then check the whole image path against the eager model.

    A failure removes the bundle and raises :class:`ParityError` (exit 4), unless
    ``allow_parity_failure``: then it is written with the failure in its parity report.
    """
    manifest = record_preprocess(bundle, preprocess, notes)
    step("checking the image path (decode + preprocessing + artifact)")
    try:
        entry = parity.check_image_path(bundle, model, manifest)
        if not entry["passed"] and not allow_parity_failure:
            raise ParityError(
                "image path parity failed: the server's decode + preprocessing + artifact do "
                "not reproduce the model fed by the reference pipeline on "
                + parity.describe(entry) + "; no bundle written")
        return parity.record(bundle, manifest, entry, allowed=allow_parity_failure)
    except BaseException:
        shutil.rmtree(bundle, ignore_errors=True)
        raise


__all__ = ["attach_images", "check_preprocess", "image_sample", "record_preprocess", "spec_fields"]

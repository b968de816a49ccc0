"""Record an image preprocessing spec in a freshly packed bundle (#17).

The spec is checked twice: on its own before the model is exported (a typo costs no export),
and against the bundle's single input tensor afterwards. The manifest is rewritten in place:
its file hashes cover the artifact, not the manifest, and signing happens after this.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from packserve.bundle import MANIFEST_NAME, ImagePreprocess, Manifest, read_manifest
from packserve.errors import PackError


def check_preprocess(preprocess: Mapping[str, Any], input_name: str | None = None) -> ImagePreprocess:
    """Validate the user's ``preprocess=`` mapping; :class:`PackError` names the field."""
    fields = dict(preprocess)
    fields.setdefault("input", input_name or "")
    try:
        return ImagePreprocess.model_validate(fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise PackError(f"preprocess{'.' + loc if loc else ''}: {err['msg']}") from None


def record_preprocess(bundle: Path, preprocess: Mapping[str, Any]) -> Manifest:
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
        try:
            updated = Manifest.model_validate(data)
        except ValidationError as exc:
            raise PackError(f"preprocess: {exc.errors()[0]['msg']}") from None
        (bundle / MANIFEST_NAME).write_text(updated.model_dump_json(indent=2) + "\n")
        return updated
    except BaseException:
        shutil.rmtree(bundle, ignore_errors=True)
        raise


__all__ = ["check_preprocess", "record_preprocess"]

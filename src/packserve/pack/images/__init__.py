"""Image bundles at pack time (#17): the preprocessing spec, recorded and proven.

- :mod:`.spec` records the spec (a mapping, or a translated torchvision ``Compose``) in a
  packed bundle and runs the image-path check (:func:`attach_images`);
- :mod:`.transforms` translates a torchvision ``Compose`` into the spec, torchvision unimported;
- :mod:`.reference` is the independent Pillow + NumPy reading of the spec, and the probe images;
- :mod:`.parity` compares the runtime's decode + preprocessing + artifact with the reference
  feeding the eager model (one entry of ``manifest.parity.checks``, named :data:`CHECK`).

Everything outside this package imports from here, not from the modules.
"""

from __future__ import annotations

from packserve.pack.images.parity import CHECK, check_image_path, describe
from packserve.pack.images.reference import probe_images, reference_input, within_limits
from packserve.pack.images.spec import (
    attach_images,
    check_preprocess,
    image_sample,
    record_preprocess,
    spec_fields,
)
from packserve.pack.images.transforms import SUPPORTED, Translation, is_transform, translate

__all__ = [
    "CHECK", "SUPPORTED", "Translation", "attach_images", "check_image_path", "check_preprocess",
    "describe", "image_sample", "is_transform", "probe_images", "record_preprocess",
    "reference_input", "spec_fields", "translate", "within_limits",
]

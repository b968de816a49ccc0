"""The bundle: an artifact directory plus its ``packserve.json`` manifest.

:mod:`.manifest` holds the manifest's models (pydantic), :mod:`.io` writes, reads and
verifies bundle directories. Everything is importable from here (``from packserve.bundle
import Manifest, verify_bundle``).
"""

from __future__ import annotations

from packserve.bundle.io import (
    prepare_output_dir,
    read_manifest,
    refuse_existing,
    sha256_file,
    verify_bundle,
    write_bundle,
)
from packserve.bundle.manifest import (
    FLOAT_DTYPES,
    INTEGER_DTYPES,
    MANIFEST_NAME,
    NAMED_OUTPUT_TASKS,
    READABLE_SCHEMA_VERSIONS,
    SCHEMA_VERSION,
    Dtype,
    FeatureSpec,
    FileEntry,
    ImagePreprocess,
    Interpolation,
    Label,
    Manifest,
    OutputSpec,
    ParityReport,
    Signature,
    Task,
    TensorSpec,
)

__all__ = [
    "FLOAT_DTYPES",
    "INTEGER_DTYPES",
    "MANIFEST_NAME",
    "NAMED_OUTPUT_TASKS",
    "READABLE_SCHEMA_VERSIONS",
    "SCHEMA_VERSION",
    "Dtype",
    "FeatureSpec",
    "FileEntry",
    "ImagePreprocess",
    "Interpolation",
    "Label",
    "Manifest",
    "OutputSpec",
    "ParityReport",
    "Signature",
    "Task",
    "TensorSpec",
    "prepare_output_dir",
    "read_manifest",
    "refuse_existing",
    "sha256_file",
    "verify_bundle",
    "write_bundle",
]

"""What the load generator sends: bodies built from a model's signature.

``bodies`` builds table rows and JSON bodies and resolves a server's signature, ``tensors``
generates N-D arrays and token ids for tensor models, ``images`` encoded pictures for image
bundles. Bodies are built before the clock starts, so generating them costs the run nothing.
"""

from __future__ import annotations

from packserve.bench.inputs.bodies import (
    Feature,
    RowGenerator,
    Signature,
    apply_v2_dtypes,
    build_bodies,
    parse_model_metadata,
    resolve_signature,
)

__all__ = ["Feature", "RowGenerator", "Signature", "apply_v2_dtypes", "build_bodies",
           "parse_model_metadata", "resolve_signature"]

"""packserve: trained model -> safe bundle -> fast, production HTTP inference API.

``import packserve`` stays light: frameworks, ONNX Runtime, torch and FastAPI are
imported only when the function that needs them is called (a test checks this).

The public functions share their names with subpackages (``packserve.pack`` is both);
they are bound here, after the subpackages are imported, so the function wins.
"""

from __future__ import annotations

from packserve.bundle import Manifest, read_manifest, verify_bundle
from packserve.errors import PackserveError
from packserve.pack import PackResult, pack
from packserve.runtime import Prediction, Predictor, RuntimeOptions, load
from packserve.scan import ScanReport, scan

__version__ = "0.1.0"

__all__ = [
    "Manifest",
    "PackResult",
    "PackserveError",
    "Prediction",
    "Predictor",
    "RuntimeOptions",
    "ScanReport",
    "__version__",
    "load",
    "pack",
    "read_manifest",
    "scan",
    "verify_bundle",
]

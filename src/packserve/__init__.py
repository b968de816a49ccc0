"""packserve: trained model -> safe bundle -> fast, production HTTP inference API.

``import packserve`` stays light: the public names below are imported on first use (PEP 562),
so ``import packserve`` or ``packserve scan`` pays for neither pydantic nor numpy, and
frameworks, ONNX Runtime, torch and FastAPI only when the function that needs them runs (a
test checks this).

The public functions share their names with subpackages (``packserve.pack`` is both): the
function wins, also after the subpackage is imported (see :class:`_Package`).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from packserve.bundle import Manifest, read_manifest, verify_bundle
    from packserve.errors import PackserveError
    from packserve.pack import PackResult, pack
    from packserve.runtime import Prediction, Predictor, RuntimeOptions, load
    from packserve.scan import ScanReport, scan
    from packserve.signing import sign_bundle, verify_signature

__version__ = "0.1.0"

_LAZY = {
    "Manifest": "packserve.bundle",
    "read_manifest": "packserve.bundle",
    "verify_bundle": "packserve.bundle",
    "PackserveError": "packserve.errors",
    "PackResult": "packserve.pack",
    "pack": "packserve.pack",
    "Prediction": "packserve.runtime",
    "Predictor": "packserve.runtime",
    "RuntimeOptions": "packserve.runtime",
    "load": "packserve.runtime",
    "ScanReport": "packserve.scan",
    "scan": "packserve.scan",
    "sign_bundle": "packserve.signing",
    "verify_signature": "packserve.signing",
}
_FUNCTIONS = {"pack", "scan"}  # names that are both a public function and a subpackage


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'packserve' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """Importing ``packserve.pack`` binds the subpackage on its parent: keep the function."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _FUNCTIONS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

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
    "sign_bundle",
    "verify_bundle",
    "verify_signature",
]

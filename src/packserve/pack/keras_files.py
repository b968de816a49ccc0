"""Load Keras model files for ``pack`` without running code from them.

A ``.keras`` zip or legacy ``.h5`` file is scanned first (:mod:`packserve.scan.keras`: a
``Lambda`` layer's marshalled bytecode, custom objects and registered functions are findings)
and refused on any finding or scan failure; only a clean file is loaded, and then with
``safe_mode=True`` so Keras itself also refuses to deserialize Lambda bytecode.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from packserve.errors import PackError
from packserve.pack.families.tf_common import require_tf


def load_keras_file(path: str | os.PathLike[str]) -> Any:
    """Scan, then load a ``.keras`` / ``.h5`` model with ``safe_mode=True``."""
    from packserve.scan import ensure_safe

    p = Path(path)
    ensure_safe(p)  # UnsafeFileError (exit 1) / ScanFailedError (exit 2) before any load
    require_tf()
    import keras

    try:
        try:  # compiled: the loss tells a regressor from a logit (task inference)
            return keras.saving.load_model(str(p), safe_mode=True, compile=True)
        except (ValueError, TypeError):  # legacy .h5 losses by name do not deserialize in Keras 3
            return keras.saving.load_model(str(p), safe_mode=True, compile=False)
    except Exception as exc:  # Keras's own errors; keep the host path out
        raise PackError(f"could not load '{p.name}' as a Keras model: {type(exc).__name__}: "
                        f"{str(exc).replace(str(p), p.name)[:300]}",
                        detail_for_logs=repr(exc)) from exc


__all__ = ["load_keras_file"]

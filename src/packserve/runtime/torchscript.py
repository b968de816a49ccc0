"""TorchScript backend: ``torch.jit.load`` only after the archive's pickles are scanned.

A TorchScript file is a zip archive holding pickles (``data.pkl``, ``constants.pkl``) next to
TorchScript code; it is *not* code-free. So, in this order: :func:`packserve.runtime.load`
verifies every file's sha256 against the manifest, then this predictor runs packserve's
scanner over the archive (:func:`packserve.scan.ensure_safe`), and only a clean archive is
handed to ``torch.jit.load``. Loading never needs the model's Python class.

Thread note: ``torch.set_num_threads`` is *process-wide*. ``intra_op_threads > 0`` sets it
when the bundle is loaded (the last TorchScript bundle loaded wins); ``0`` leaves torch's
default. Inter-op threads are left to torch (they can only be set once per process).
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from packserve.bundle import Manifest
from packserve.errors import BundleError, MissingDependencyError, PackserveError
from packserve.runtime.base import Predictor
from packserve.runtime.inputs import Feeds
from packserve.runtime.onnx import RuntimeOptions

_threads_lock = threading.Lock()


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError("torch", "torch") from exc
    return torch


def scan_archive(artifact: Path) -> None:
    """Refuse the archive unless packserve's scanner finds its embedded pickles clean.

    Fails closed: if the scanner itself is unavailable, nothing is loaded.
    """
    try:
        from packserve.scan import ensure_safe  # type: ignore[attr-defined,unused-ignore]
    except ImportError as exc:
        raise BundleError(
            "cannot load a TorchScript bundle: packserve's pickle scanner is unavailable, and a "
            "TorchScript archive holds pickles that must be scanned before loading"
        ) from exc
    ensure_safe(artifact)


class TorchScriptPredictor(Predictor):
    """Runs a scanned TorchScript archive under ``torch.inference_mode()`` on CPU."""

    def __init__(self, manifest: Manifest, artifact: Path, options: RuntimeOptions) -> None:
        super().__init__(manifest)
        torch = _torch()
        scan_archive(artifact)  # raises UnsafeFileError / ScanFailedError: never loaded
        if options.intra_op_threads > 0:
            with _threads_lock:
                torch.set_num_threads(options.intra_op_threads)
        try:
            with warnings.catch_warnings():
                # torch 2.13 deprecates torch.jit.load; the bundle's manifest and `packserve
                # inspect` already say so once, a server log line per load adds nothing.
                warnings.simplefilter("ignore", DeprecationWarning)
                self.module = torch.jit.load(str(artifact), map_location="cpu")
            self.module.eval()
        except PackserveError:
            raise
        except Exception as exc:
            raise BundleError(
                "torch.jit could not load the artifact", detail_for_logs=repr(exc)
            ) from exc
        self._torch = torch
        if len(manifest.inputs) != 1:
            raise BundleError("a TorchScript bundle must declare exactly one input tensor")
        self._input = manifest.inputs[0].name
        self._output = (manifest.outputs.names or ["output"])[0]
        schema = getattr(self.module.forward, "schema", None)
        if schema is not None and len(schema.arguments) != 2:  # self + x
            raise BundleError(
                f"the TorchScript module's forward takes {len(schema.arguments) - 1} inputs; "
                "the manifest declares 1"
            )

    def _run_raw(self, feeds: Feeds) -> dict[str, np.ndarray]:
        torch = self._torch
        arr = np.ascontiguousarray(feeds[self._input])
        if not arr.flags.writeable:  # e.g. decoded from a request body; torch wants writable
            arr = arr.copy()
        x = torch.from_numpy(arr)
        with torch.inference_mode():
            out = self.module(x)
        if not isinstance(out, torch.Tensor):
            raise BundleError("the TorchScript module did not return a single tensor")
        return {self._output: out.cpu().numpy()}

    def close(self) -> None:
        self.module = None


__all__ = ["TorchScriptPredictor", "scan_archive"]

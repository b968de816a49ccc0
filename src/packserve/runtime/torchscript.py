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
        # forward(*inputs) takes the manifest's inputs positionally, in order; it returns one
        # tensor, a tuple/list of tensors, or a dict (named as the manifest's outputs).
        self._inputs = [t.name for t in manifest.inputs]
        self._outputs = list(manifest.outputs.names or ["output"])
        schema = getattr(self.module.forward, "schema", None)
        if schema is not None and len(schema.arguments) != len(self._inputs) + 1:  # self + inputs
            raise BundleError(
                f"the TorchScript module's forward takes {len(schema.arguments) - 1} inputs; "
                f"the manifest declares {len(self._inputs)}"
            )

    def _tensor(self, arr: np.ndarray) -> Any:
        arr = np.ascontiguousarray(arr)
        if not arr.flags.writeable:  # e.g. decoded from a request body; torch wants writable
            arr = arr.copy()
        return self._torch.from_numpy(arr)

    def _run_raw(self, feeds: Feeds) -> dict[str, np.ndarray]:
        torch = self._torch
        args = [self._tensor(feeds[n]) for n in self._inputs]
        with torch.inference_mode():
            out = self.module(*args)
        if isinstance(out, torch.Tensor):
            parts = [out]
        elif isinstance(out, tuple | list) and all(isinstance(t, torch.Tensor) for t in out):
            parts = list(out)
        elif isinstance(out, dict) and all(isinstance(t, torch.Tensor) for t in out.values()):
            if set(out) != set(self._outputs):
                raise BundleError("the TorchScript module returned other outputs than the manifest's")
            parts = [out[n] for n in self._outputs]
        else:
            raise BundleError("the TorchScript module returned something other than tensors")
        if len(parts) != len(self._outputs):
            raise BundleError(
                f"the TorchScript module returned {len(parts)} outputs; the manifest names "
                f"{len(self._outputs)}"
            )
        return {n: t.detach().cpu().numpy() for n, t in zip(self._outputs, parts, strict=True)}

    def close(self) -> None:
        self.module = None


__all__ = ["TorchScriptPredictor", "scan_archive"]

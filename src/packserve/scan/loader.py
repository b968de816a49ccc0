"""The restricted loader: the only place in packserve that unpickles a user's file.

Two gates, same policy (defence in depth):

1. the file's bytes are read once into memory and scanned (:func:`scan_bytes`); any finding or
   scan error refuses the file, so the bytes that are loaded are exactly the bytes that were
   scanned (no time-of-check/time-of-use window);
2. the unpickler's ``find_class`` admits only globals :func:`packserve.scan.policy.is_allowed`
   admits, so even a scanner bug cannot resolve a global the policy does not allow.

joblib files (raw or compressed) interleave array bytes with opcodes; they are read by a
subclass of joblib's own ``NumpyUnpickler`` with the same ``find_class`` gate, never by
``joblib.load``.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

from packserve.errors import ScanFailedError, UnsafeFileError, UnsupportedModelError
from packserve.scan.formats import COMPRESSED, open_decompressed, sniff
from packserve.scan.policy import is_allowed
from packserve.scan.report import ScanReport
from packserve.scan.scanner import scan_bytes
from packserve.scan.stream import CHUNK, bytes_reader

MAX_FILE_BYTES = 4 << 30
MAX_DECOMPRESSED = 8 << 30


class RefusedGlobalError(pickle.UnpicklingError):
    """The restricted unpickler met a global outside the allowlist."""


def _check(module: str, name: str) -> None:
    if not is_allowed(module, name):
        raise RefusedGlobalError(f"global {module}.{name} is not in the allowlist")


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose globals must be allowlisted; no persistent ids."""

    def find_class(self, module: str, name: str) -> Any:
        _check(module, name)
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedGlobalError("persistent ids are not supported")


def _restricted_numpy_unpickler() -> type[Any]:
    from joblib.numpy_pickle import NumpyUnpickler  # type: ignore[import-untyped]

    class RestrictedNumpyUnpickler(NumpyUnpickler):  # type: ignore[misc]
        """joblib's unpickler (array bytes between opcodes) with the allowlist gate."""

        def find_class(self, module: str, name: str) -> Any:
            _check(module, name)
            return super().find_class(module, name)

        def persistent_load(self, pid: Any) -> Any:
            raise RefusedGlobalError("persistent ids are not supported")

    return RestrictedNumpyUnpickler


def _refuse(report: ScanReport, name: str) -> None:
    if report.findings:
        first = report.findings[0]
        where = f" in {first.member}" if first.member else ""
        raise UnsafeFileError(
            f"refusing to load {name}: {first.severity.value}{where}: {first.reason}"
            + (f" (+{len(report.findings) - 1} more)" if len(report.findings) > 1 else ""),
            report=report,
        )
    if report.errors:
        raise ScanFailedError(f"could not scan {name}: {report.errors[0].reason}")


def _decompress(kind: str, data: bytes) -> bytes:
    stream = open_decompressed(kind, bytes_reader(data))
    parts: list[bytes] = []
    total = 0
    while chunk := stream.read(CHUNK):
        total += len(chunk)
        if total > MAX_DECOMPRESSED:
            raise ScanFailedError("decompressed content exceeds the size cap")
        parts.append(chunk)
    return b"".join(parts)


def loads_checked(data: bytes, name: str = "<bytes>") -> Any:
    """Scan ``data``; if clean, unpickle it with the allowlist enforced (pickle or joblib)."""
    _refuse(scan_bytes(data, name), name)
    kind = sniff(data[:512])
    if kind in COMPRESSED:
        data = _decompress(kind, data)
        kind = sniff(data[:512])
    if kind != "pickle":
        raise UnsupportedModelError(
            f"{name} is a {kind} file, not a pickle or joblib model; nothing was loaded"
        )
    try:
        if b"NumpyArrayWrapper" in data:
            unpickler_cls = _restricted_numpy_unpickler()
            # safe-load: the exact bytes were scanned clean above and find_class re-checks
            # every global against the same allowlist; persistent ids are refused.
            unpickler = unpickler_cls("", io.BytesIO(data), True)
            return unpickler.load()
        # safe-load: the exact bytes were scanned clean above and find_class re-checks every
        # global against the same allowlist; persistent ids are refused.
        return RestrictedUnpickler(io.BytesIO(data)).load()
    except RefusedGlobalError as exc:
        raise UnsafeFileError(f"refusing to load {name}: {exc}") from None
    except Exception as exc:  # a clean but broken file: the model's own error, no internals
        raise ScanFailedError(
            f"could not load {name}: {type(exc).__name__}", detail_for_logs=repr(exc)
        ) from None


def load_pickle_file(path: str | os.PathLike[str]) -> Any:
    """Load a pickle or joblib model file safely (scan first, then restricted unpickling)."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ScanFailedError(f"{p.name} is larger than {MAX_FILE_BYTES} bytes")
        data = p.read_bytes()
    except FileNotFoundError:
        raise ScanFailedError(f"{p.name}: no such file") from None
    except OSError as exc:
        raise ScanFailedError(f"cannot read {p.name}: {exc.strerror}") from None
    return loads_checked(data, p.name)


__all__ = ["RefusedGlobalError", "RestrictedUnpickler", "load_pickle_file", "loads_checked"]

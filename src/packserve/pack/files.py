"""Load a model *file* for ``packserve pack``: native, non-pickle formats only.

The format is detected from the file's content (its first bytes), not trusted from its
extension. Supported: XGBoost ``.json`` / ``.ubj``, LightGBM text ``.txt``, CatBoost
``.cbm``, Keras ``.keras`` (zip) / ``.h5`` (HDF5) — scanned, then loaded with
``safe_mode=True`` (:func:`load_keras_file`) — and a TensorFlow SavedModel directory
(converted from its graph, :mod:`packserve.pack.families.savedmodel`). Pickle-based files
(``.pkl``, ``.pickle``, ``.joblib``) go through the scan layer's safe migration
(:func:`packserve.scan.loader.load_pickle_file`): scanned without executing
anything, refused on any finding, then unpickled with the allowlist enforced. Torch ``.pt``
zips are refused.

Samples for the CLI are read by :mod:`packserve.pack.samples` (re-exported here).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

from packserve.errors import MissingDependencyError, PackError, UnsupportedModelError
from packserve.pack.samples import SampleFile, align_sample, load_sample_file, model_feature_names

XGBOOST_JSON = "xgboost-json"
XGBOOST_UBJ = "xgboost-ubj"
LIGHTGBM_TEXT = "lightgbm-text"
CATBOOST_CBM = "catboost-cbm"
PICKLE = "pickle"
ONNX = "onnx"
TORCH_PT2 = "torch .pt2"
KERAS = "keras"
KERAS_H5 = "keras-h5"
SAVED_MODEL = "tensorflow-savedmodel"
UNKNOWN = "unknown"
PT2_REASON = (
    "{name!r} is a torch .pt2 archive, which packserve does not load: torch.export.load falls "
    "back to full unpickling, and AOTInductor packages load compiled native code. Load it "
    "yourself in a process you trust and pass the ExportedProgram to packserve.pack(ep, ...), "
    "or export the model to ONNX"
)

NATIVE_FORMATS = ("XGBoost .json/.ubj, LightGBM .txt, CatBoost .cbm, Keras .keras/.h5, "
                  "a TensorFlow SavedModel directory")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pt", ".pth", ".sav", ".dill")
_COMPRESSED = {  # joblib.dump(compress=...) wraps the pickle in one of these
    b"\x78": "zlib", b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz",
    b"\x5d\x00\x00": "lzma", b"\x04\x22\x4d\x18": "lz4",
}


def _first(path: Path, n: int = 256) -> bytes:
    with path.open("rb") as fh:
        return fh.read(n)


def detect_format(path: str | os.PathLike[str]) -> str:
    """Name the model format of ``path`` from its first bytes (extension only as a tiebreak)."""
    p = Path(path)
    if p.is_dir():
        return SAVED_MODEL if (p / "saved_model.pb").is_file() else UNKNOWN
    head = _first(p)
    if head.startswith(HDF5_MAGIC):
        return KERAS_H5  # the scan decides whether it holds a Keras model config
    stripped = head.lstrip()
    if head[:4] == b"CBM1":
        return CATBOOST_CBM
    if head.startswith((b"tree\n", b"tree\r\n")):
        return LIGHTGBM_TEXT
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return PICKLE
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(p) as zf:
                names = zf.namelist()
                if p.suffix.lower() == ".pt2" or any(
                    n.endswith(("/archive_format", "/.data/serialization_id")) or "/aotinductor/" in n
                    for n in names
                ):
                    return TORCH_PT2
                if any(n.endswith((".pkl", "data.pkl")) for n in zf.namelist()):
                    return PICKLE  # torch.save / zipped pickles
                if "config.json" in names and (
                        "metadata.json" in names or "model.weights.h5" in names):
                    return KERAS
        except zipfile.BadZipFile:
            pass
        return UNKNOWN
    if stripped.startswith(b"{") and b"learner" in head:
        body = stripped[1:].lstrip()
        return XGBOOST_JSON if body.startswith(b'"') else XGBOOST_UBJ
    if any(head.startswith(magic) for magic in _COMPRESSED) and p.suffix.lower() in PICKLE_SUFFIXES:
        return PICKLE
    if p.suffix.lower() in PICKLE_SUFFIXES:
        return PICKLE  # protocol 0/1 pickles have no magic; the name says what it is
    if p.suffix.lower() == ".onnx":
        return ONNX
    return UNKNOWN


def _load_xgboost(path: Path) -> Any:
    try:
        import xgboost
    except ImportError as exc:
        raise MissingDependencyError("xgboost", "xgboost") from exc
    from packserve.pack.families.booster import xgboost_estimator

    booster = xgboost.Booster()
    booster.load_model(str(path))
    return xgboost_estimator(booster)


def _load_lightgbm(path: Path) -> Any:
    try:
        import lightgbm
    except ImportError as exc:
        raise MissingDependencyError("lightgbm", "lightgbm") from exc
    return lightgbm.Booster(model_file=str(path))


def _load_catboost(path: Path) -> Any:
    try:
        import catboost
    except ImportError as exc:
        raise MissingDependencyError("catboost", "catboost") from exc
    generic = catboost.CatBoost()
    generic.load_model(str(path))
    loss = str(generic.get_all_params().get("loss_function", "")).split(":")[0]
    cls = (
        catboost.CatBoostClassifier
        if loss in ("Logloss", "CrossEntropy", "MultiClass", "MultiClassOneVsAll")
        else catboost.CatBoostRegressor
    )
    model = cls()
    model.load_model(str(path))
    return model


_LOADERS = {
    XGBOOST_JSON: _load_xgboost,
    XGBOOST_UBJ: _load_xgboost,
    LIGHTGBM_TEXT: _load_lightgbm,
    CATBOOST_CBM: _load_catboost,
}


def load_keras_file(path: str | os.PathLike[str]) -> Any:
    """Scan, then load a ``.keras`` / ``.h5`` model with ``safe_mode=True``.

    The scan (:mod:`packserve.scan.keras`) finds a ``Lambda`` layer's marshalled bytecode,
    custom objects and registered functions; any finding or scan failure refuses the file, and
    ``safe_mode=True`` has Keras itself refuse to deserialize Lambda bytecode too.
    """
    from packserve.pack.families.tf_common import require_tf
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


def load_model_file(path: str | os.PathLike[str]) -> Any:
    """Load a native model file; refuse pickles and unknown formats with the reason."""
    p = Path(path)
    if p.is_dir():
        if detect_format(p) != SAVED_MODEL:
            raise UnsupportedModelError(
                f"'{p}' is a directory without saved_model.pb; a directory is packed only as a "
                "TensorFlow SavedModel")
        from packserve.pack.families.savedmodel import SavedModelDir

        return SavedModelDir(p)
    if not p.is_file():
        raise PackError(f"model file '{p}' does not exist")
    fmt = detect_format(p)
    if fmt in (KERAS, KERAS_H5):
        return load_keras_file(p)
    if fmt == PICKLE:
        # Safe migration (scan layer): the file is scanned without executing it and refused on
        # any finding (UnsafeFileError) or scan failure; only then is it unpickled, with the
        # same allowlist enforced in find_class. Torch zips are refused there (not a model).
        from packserve.scan.loader import load_pickle_file

        return load_pickle_file(p)
    if fmt == TORCH_PT2:
        raise UnsupportedModelError(PT2_REASON.format(name=p.name))
    if fmt == ONNX:
        raise UnsupportedModelError(
            f"'{p}' is already ONNX; `pack` takes the native model ({NATIVE_FORMATS})"
        )
    loader = _LOADERS.get(fmt)
    if loader is None:
        raise UnsupportedModelError(
            f"cannot tell what model format '{p}' is; supported: {NATIVE_FORMATS}"
        )
    try:
        return loader(p)
    except (MissingDependencyError, UnsupportedModelError):
        raise
    except Exception as exc:  # the frameworks' own errors; keep the host path out
        raise PackError(
            f"could not read '{p}' as {fmt}: {type(exc).__name__}",
            detail_for_logs=repr(exc),
        ) from exc


__all__ = [
    "CATBOOST_CBM",
    "KERAS",
    "KERAS_H5",
    "LIGHTGBM_TEXT",
    "NATIVE_FORMATS",
    "PICKLE",
    "PT2_REASON",
    "SAVED_MODEL",
    "TORCH_PT2",
    "XGBOOST_JSON",
    "XGBOOST_UBJ",
    "SampleFile",
    "align_sample",
    "detect_format",
    "load_keras_file",
    "load_model_file",
    "load_sample_file",
    "model_feature_names",
]

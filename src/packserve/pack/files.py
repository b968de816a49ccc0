"""Load a model *file* for ``packserve pack``: native, non-pickle formats only.

The format is detected from the file's content (its first bytes), not trusted from its
extension. Supported: XGBoost ``.json`` / ``.ubj``, LightGBM text ``.txt``, CatBoost
``.cbm``. Pickle-based files (``.pkl``, ``.pickle``, ``.joblib``) go through the scan layer's
safe migration (:func:`packserve.scan.loader.load_pickle_file`): scanned without executing
anything, refused on any finding, then unpickled with the allowlist enforced. Torch ``.pt``
zips are refused.

Samples for the CLI come from ``.csv`` (optional header row) or ``.npy`` (loaded with
``allow_pickle=False``).
"""

from __future__ import annotations

import csv
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from packserve.errors import MissingDependencyError, PackError, SampleError, UnsupportedModelError

XGBOOST_JSON = "xgboost-json"
XGBOOST_UBJ = "xgboost-ubj"
LIGHTGBM_TEXT = "lightgbm-text"
CATBOOST_CBM = "catboost-cbm"
PICKLE = "pickle"
ONNX = "onnx"
UNKNOWN = "unknown"

NATIVE_FORMATS = "XGBoost .json/.ubj, LightGBM .txt, CatBoost .cbm"
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
    head = _first(p)
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
                if any(n.endswith((".pkl", "data.pkl")) for n in zf.namelist()):
                    return PICKLE  # torch.save / zipped pickles
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
    from packserve.pack.booster import xgboost_estimator

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


def load_model_file(path: str | os.PathLike[str]) -> Any:
    """Load a native model file; refuse pickles and unknown formats with the reason."""
    p = Path(path)
    if not p.is_file():
        raise PackError(f"model file {p.name!r} does not exist")
    fmt = detect_format(p)
    if fmt == PICKLE:
        # Safe migration (scan layer): the file is scanned without executing it and refused on
        # any finding (UnsafeFileError) or scan failure; only then is it unpickled, with the
        # same allowlist enforced in find_class. Torch zips are refused there (not a model).
        from packserve.scan.loader import load_pickle_file

        return load_pickle_file(p)
    if fmt == ONNX:
        raise UnsupportedModelError(
            f"{p.name!r} is already ONNX; `pack` takes the native model ({NATIVE_FORMATS})"
        )
    loader = _LOADERS.get(fmt)
    if loader is None:
        raise UnsupportedModelError(
            f"cannot tell what model format {p.name!r} is; supported: {NATIVE_FORMATS}"
        )
    try:
        return loader(p)
    except (MissingDependencyError, UnsupportedModelError):
        raise
    except Exception as exc:  # the frameworks' own errors; keep the host path out
        raise PackError(
            f"could not read {p.name!r} as {fmt}: {type(exc).__name__}",
            detail_for_logs=repr(exc),
        ) from exc


# --- samples -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleFile:
    table: np.ndarray  # (n, k): float64, or object when some columns hold strings
    header: list[str] | None
    string_columns: tuple[int, ...] = ()


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def load_sample_file(path: str | os.PathLike[str]) -> SampleFile:
    """Read a numeric sample from ``.csv`` (header row detected) or ``.npy``."""
    p = Path(path)
    if not p.is_file():
        raise SampleError(f"sample file {p.name!r} does not exist")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except ValueError as exc:
            raise SampleError(
                f"{p.name!r} is not a numeric .npy array (object arrays need pickle, which "
                "packserve refuses)"
            ) from exc
        if arr.dtype.kind not in "fiub":
            raise SampleError(f"{p.name!r} holds {arr.dtype} values; a numeric array is needed")
        if arr.ndim == 1:
            arr = arr.reshape(1, -1)
        if arr.ndim != 2:
            raise SampleError(f"{p.name!r} must be 2-D (rows, features); it is {arr.ndim}-D")
        return SampleFile(table=arr.astype(np.float64), header=None)
    if suffix != ".csv":
        raise SampleError(f"sample {p.name!r} must be a .csv or .npy file")
    with p.open(newline="") as fh:
        rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    if not rows:
        raise SampleError(f"sample {p.name!r} is empty")
    header = None
    if not all(_is_number(c) for c in rows[0]):
        header = [c.strip() for c in rows[0]]
        rows = rows[1:]
    width = len(header) if header is not None else len(rows[0]) if rows else 0
    for i, row in enumerate(rows):
        if len(row) != width:
            raise SampleError(f"sample {p.name!r} row {i + 1} has {len(row)} columns, not {width}")
    if not rows:
        raise SampleError(f"sample {p.name!r} has a header but no rows")
    # A column is numeric when every cell parses as a number; otherwise it is a string
    # (categorical) column, which needs a header naming it.
    strings = tuple(j for j in range(width) if not all(_is_number(r[j]) for r in rows))
    if strings and header is None:
        j = strings[0]
        bad = next(r[j] for r in rows if not _is_number(r[j]))
        raise SampleError(
            f"sample {p.name!r} has a non-numeric value {bad!r} in column {j}; a sample with "
            "string (categorical) columns needs a header row naming its columns"
        )
    if not strings:
        return SampleFile(np.asarray(rows, dtype=np.float64).reshape(len(rows), width), header)
    table = np.empty((len(rows), width), dtype=object)
    for j in range(width):
        col = [r[j] for r in rows]
        table[:, j] = col if j in strings else [float(c) for c in col]
    return SampleFile(table=table, header=header, string_columns=strings)


def model_feature_names(model: Any) -> list[str] | None:
    """Feature names a loaded model carries, if they are real names (not f0/Column_0/0)."""
    names: Any = getattr(model, "feature_names_in_", None)
    if names is None and callable(getattr(model, "feature_name", None)):
        names = model.feature_name()  # lightgbm.Booster
    if names is None:
        names = getattr(model, "feature_names_", None)  # catboost
    if names is None:
        return None
    out = [str(n) for n in names]
    for default in ("f{}", "Column_{}", "{}"):
        if out == [default.format(i) for i in range(len(out))]:
            return None
    return out


def align_sample(sample: SampleFile, model: Any) -> tuple[Any, list[str] | None]:
    """Order a sample's columns like the model's features; name any mismatch.

    A sample with string columns becomes a pandas DataFrame (what a ColumnTransformer
    pipeline is fitted on); ``pack`` matches its columns to the model's by name.
    """
    if sample.string_columns:
        try:
            import pandas as pd
        except ImportError as exc:
            raise MissingDependencyError("pandas", "sklearn") from exc
        assert sample.header is not None
        frame = pd.DataFrame(
            {n: sample.table[:, j] if j in sample.string_columns
             else sample.table[:, j].astype(np.float64)
             for j, n in enumerate(sample.header)}
        )
        return frame, None
    names = model_feature_names(model)
    if sample.header is None:
        return sample.table, names
    if names is None or sample.header == names:
        return sample.table, sample.header
    if sorted(sample.header) != sorted(names):
        missing = [n for n in names if n not in sample.header]
        extra = [n for n in sample.header if n not in names]
        raise SampleError(
            f"sample columns do not match the model's features: missing {missing[:5]}, "
            f"unexpected {extra[:5]}"
        )
    order = [sample.header.index(n) for n in names]
    return sample.table[:, order], names


__all__ = [
    "CATBOOST_CBM",
    "LIGHTGBM_TEXT",
    "NATIVE_FORMATS",
    "PICKLE",
    "XGBOOST_JSON",
    "XGBOOST_UBJ",
    "SampleFile",
    "align_sample",
    "detect_format",
    "load_model_file",
    "load_sample_file",
    "model_feature_names",
]

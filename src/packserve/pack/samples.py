"""Read the CLI's ``--sample`` file as people save it: CSV, parquet or ``.npy``.

A CSV written by ``DataFrame.to_csv()`` has empty cells where values are missing, maybe
``NA`` / ``nan`` / ``NULL``, maybe its index as a nameless first column, maybe ``True`` /
``False`` columns next to text ones. All of that reads here: missing cells become NaN
(whether the *model* accepts them is decided later, by ``pack``, which names the feature),
booleans become 0/1, text columns stay strings. Anything that cannot become a sample is a
:class:`~packserve.errors.SampleError` that says which file, column and row — never a
parser's traceback.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from packserve.errors import MissingDependencyError, SampleError

# pandas' default ``na_values`` (what ``read_csv`` would read as NaN), compared stripped.
MISSING_TOKENS = frozenset({
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
})
_BOOLS = {"true": 1.0, "false": 0.0}
SAMPLE_SUFFIXES = ".csv, .parquet or .npy"
_NUMERIC_ONLY = ("xgboost", "lightgbm", "catboost")  # native files: numeric features only


@dataclass(frozen=True)
class SampleFile:
    table: np.ndarray  # (n, k): float64 (NaN = missing), or object when some columns hold strings
    header: list[str] | None
    string_columns: tuple[int, ...] = ()


def _number(cell: str) -> float | None:
    """The cell as a float (NaN when missing), or None when it is not a number."""
    c = cell.strip()
    if c in MISSING_TOKENS:
        return float("nan")
    try:
        return float(c)
    except ValueError:
        return None


def _is_number(cell: str) -> bool:
    return _number(cell) is not None


def _numeric_column(cells: list[str]) -> np.ndarray | None:
    """Numbers (or booleans) with missing cells as NaN; None when the column is text."""
    nums = [_number(c) for c in cells]
    if all(v is not None for v in nums):
        return np.asarray(nums, dtype=np.float64)
    present = [c.strip().lower() for c in cells if c.strip() not in MISSING_TOKENS]
    if present and all(c in _BOOLS for c in present):
        return np.asarray(
            [np.nan if c.strip() in MISSING_TOKENS else _BOOLS[c.strip().lower()] for c in cells]
        )
    return None


def _read_rows(p: Path) -> list[list[str]]:
    try:
        with p.open(newline="", encoding="utf-8-sig") as fh:
            return [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    except UnicodeDecodeError as exc:
        raise SampleError(f"sample '{p}' is not UTF-8 text (byte {exc.start})") from None
    except csv.Error as exc:
        raise SampleError(f"sample '{p}' is not valid CSV: {exc}") from None


def _is_index(values: np.ndarray | None) -> bool:
    """A column ``to_csv()`` wrote for a default index: whole numbers, no gaps in meaning."""
    return values is not None and bool(
        np.all(np.isfinite(values)) and np.all(values == np.round(values))
    )


def _load_csv(p: Path) -> SampleFile:
    rows = _read_rows(p)
    if not rows:
        raise SampleError(f"sample '{p}' is empty")
    header = None
    if not all(_is_number(c) for c in rows[0]):
        header = [c.strip() for c in rows[0]]
        rows = rows[1:]
    width = len(header) if header is not None else len(rows[0]) if rows else 0
    for i, row in enumerate(rows):
        if len(row) != width:
            line = i + (2 if header is not None else 1)
            raise SampleError(
                f"sample '{p}' line {line} has {len(row)} columns, not {width}"
            )
    if not rows:
        raise SampleError(f"sample '{p}' has a header but no rows")
    columns = [[r[j] for r in rows] for j in range(width)]
    numeric = [_numeric_column(col) for col in columns]
    if header is not None and header[0] in ("", "Unnamed: 0") and _is_index(numeric[0]):
        # DataFrame.to_csv() with its default index=True: the index is not a feature.
        header, columns, numeric = header[1:], columns[1:], numeric[1:]
        width -= 1
    if header is not None and "" in header:
        raise SampleError(
            f"sample '{p}': header column {header.index('') + 1} has no name"
        )
    strings = tuple(j for j in range(width) if numeric[j] is None)
    if strings and header is None:
        j = strings[0]
        bad = next(c for c in columns[j] if _number(c) is None)
        raise SampleError(
            f"sample '{p}' has a non-numeric value {bad[:40]!r} in column {j}; a sample "
            "with string (categorical) columns needs a header row naming its columns"
        )
    if not strings:
        table = np.column_stack([c for c in numeric if c is not None])
        return SampleFile(table.astype(np.float64), header)
    table = np.empty((len(rows), width), dtype=object)
    for j in range(width):
        col = numeric[j]
        table[:, j] = col if col is not None else [_text(c) for c in columns[j]]
    return SampleFile(table=table, header=header, string_columns=strings)


def _text(cell: str) -> str | None:
    return None if cell.strip() in MISSING_TOKENS else cell


def _load_npy(p: Path) -> SampleFile:
    try:
        arr = np.load(p, allow_pickle=False)
    except ValueError as exc:
        raise SampleError(
            f"'{p}' is not a numeric .npy array (object arrays need pickle, which "
            "packserve refuses)"
        ) from exc
    except OSError as exc:
        raise SampleError(f"'{p}' is not a readable .npy file: {exc}") from None
    if arr.dtype.kind not in "fiub":
        raise SampleError(f"'{p}' holds {arr.dtype} values; a numeric array is needed")
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise SampleError(f"'{p}' must be 2-D (rows, features); it is {arr.ndim}-D")
    return SampleFile(table=arr.astype(np.float64), header=None)


def _load_parquet(p: Path) -> SampleFile:
    try:
        import pandas as pd
    except ImportError as exc:
        raise MissingDependencyError("pandas", "parquet") from exc
    try:
        frame = pd.read_parquet(p)
    except ImportError as exc:  # no engine: pandas names pyarrow / fastparquet
        raise MissingDependencyError("pyarrow", "parquet") from exc
    except Exception as exc:  # the engine's own errors; keep the host path out
        raise SampleError(
            f"could not read '{p}' as parquet: {type(exc).__name__}",
            detail_for_logs=repr(exc),
        ) from None
    return frame_to_sample(frame, p.name)


def frame_to_sample(frame: Any, label: str) -> SampleFile:
    """A DataFrame's columns as a sample: numbers and booleans as float64 (NaN = missing),
    text and categories as strings; anything else is refused naming the column."""
    if frame.shape[0] == 0:
        raise SampleError(f"sample {label!r} has no rows")
    header = [str(c) for c in frame.columns]
    table = np.empty(frame.shape, dtype=object)
    strings: list[int] = []
    for j, col in enumerate(frame.columns):
        series = frame[col]
        kind = getattr(series.dtype, "kind", "O")
        if kind in "biuf":
            table[:, j] = series.to_numpy(dtype=np.float64, na_value=np.nan)
        elif kind == "O" or str(series.dtype) in ("category", "string", "str"):
            values = series.astype(object).where(series.notna(), None).tolist()
            if all(v is None or isinstance(v, bool) for v in values):
                table[:, j] = [np.nan if v is None else float(v) for v in values]
            elif all(v is None or isinstance(v, str) for v in values):
                table[:, j] = values
                strings.append(j)
            else:
                raise SampleError(
                    f"sample {label!r} column {header[j]!r} mixes text with other values"
                )
        else:
            raise SampleError(
                f"sample {label!r} column {header[j]!r} holds {series.dtype} values; "
                "features must be numbers, booleans or text"
            )
    if not strings:
        return SampleFile(table.astype(np.float64), header)
    return SampleFile(table, header, tuple(strings))


def load_sample_file(path: str | os.PathLike[str]) -> SampleFile:
    """Read a sample from ``.csv`` (header row detected), ``.parquet`` or ``.npy``."""
    p = Path(path)
    if not p.is_file():
        raise SampleError(f"sample file '{p}' does not exist")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        return _load_npy(p)
    if suffix in (".parquet", ".pq"):
        return _load_parquet(p)
    if suffix != ".csv":
        raise SampleError(f"sample '{p}' must be a {SAMPLE_SUFFIXES} file")
    return _load_csv(p)


def load_tensor_sample(path: str | os.PathLike[str]) -> np.ndarray | dict[str, np.ndarray] | None:
    """An N-D ``.npy`` (one input, batch axis first) or a ``.npz`` (one array per named input)
    for tensor models; ``None`` when the file is a 2-D table (read by :func:`load_sample_file`).
    Never unpickles (``allow_pickle=False``)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".npy", ".npz") or not p.is_file():
        return None
    try:
        loaded = np.load(p, allow_pickle=False)
        if suffix == ".npz":
            with loaded:
                return {str(k): np.asarray(loaded[k]) for k in loaded.files}
    except (ValueError, OSError) as exc:
        raise SampleError(f"'{p}' is not a numeric {suffix} file (pickled arrays are refused): "
                          f"{type(exc).__name__}") from None
    arr = np.asarray(loaded)
    return arr if arr.ndim != 2 else None


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
    if sample.string_columns and type(model).__module__.split(".", 1)[0] in _NUMERIC_ONLY:
        j = sample.string_columns[0]
        assert sample.header is not None
        col = sample.table[:, j].tolist()
        r = next(i for i, v in enumerate(col) if isinstance(v, str) and _number(v) is None)
        raise SampleError(
            f"sample column {sample.header[j]!r} holds text ({str(sample.table[r, j])[:40]!r} "
            f"in row {r}); a {type(model).__name__} takes numbers only"
        )
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
    "MISSING_TOKENS",
    "SampleFile",
    "align_sample",
    "frame_to_sample",
    "load_sample_file",
    "load_tensor_sample",
    "model_feature_names",
]

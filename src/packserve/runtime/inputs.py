"""Turn user rows into the tensors a bundle's artifact expects.

Accepted row shapes: a 2-D numpy array, a list of lists, a pandas DataFrame (columns
matched by feature name), or a list of mappings ``{feature name: value}``. Everything is
validated *vectorised*: one pass to shape, one ``isfinite`` per numeric block, so the check
costs the same for 1 or 1000 rows per element.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from packserve.bundle import FeatureSpec, Manifest, TensorSpec
from packserve.errors import InputError

Feeds = dict[str, np.ndarray]

_NUMPY_DTYPES: dict[str, Any] = {
    "float32": np.float32,
    "float64": np.float64,
    "int64": np.int64,
    "int32": np.int32,
    "bool": np.bool_,
}


def _is_dataframe(obj: object) -> bool:
    return type(obj).__name__ == "DataFrame" and hasattr(obj, "columns")


def rows_to_table(rows: Any, features: Sequence[FeatureSpec]) -> np.ndarray:
    """Return a 2-D array ``(n, n_features)`` in manifest feature order.

    Numeric-only models get a float64 array; models with string features get an object
    array. Structural problems (width, names, empty input) raise :class:`InputError`.
    """
    names = [f.name for f in features]
    all_numeric = all(f.dtype != "string" for f in features)
    if _is_dataframe(rows):
        missing = [n for n in names if n not in rows.columns]
        if missing:
            raise InputError(f"DataFrame lacks feature column(s) {missing[:5]}", where="columns")
        rows = rows[names].to_numpy(dtype=np.float64 if all_numeric else object)
    elif isinstance(rows, Mapping):
        rows = [rows]
    if isinstance(rows, Sequence) and not isinstance(rows, str | bytes) and rows and isinstance(
        rows[0], Mapping
    ):
        rows = _mappings_to_table(rows, names)
    try:
        arr = np.asarray(rows, dtype=np.float64 if all_numeric else object)
    except (ValueError, TypeError) as exc:
        raise InputError(
            "rows must be numeric and rectangular (a 2-D array, list of lists, DataFrame or "
            "list of feature mappings)",
            where="rows",
        ) from exc
    if arr.ndim == 1 and arr.shape[0] == len(names) and arr.shape[0] > 0:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise InputError(f"rows must be 2-D (n_rows, {len(names)}); got {arr.ndim}-D", where="rows")
    if arr.shape[0] == 0:
        raise InputError("no rows given", where="rows")
    if arr.shape[1] != len(names):
        raise InputError(
            f"each row needs {len(names)} features, got {arr.shape[1]}", where="rows"
        )
    return arr


def _mappings_to_table(rows: Sequence[Mapping[str, Any]], names: list[str]) -> list[list[Any]]:
    known = set(names)
    table: list[list[Any]] = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise InputError("mix of mappings and non-mappings in rows", where=f"row {i}")
        if len(row) != len(names) or not known.issuperset(row):
            unknown = sorted(set(row) - known)
            missing = [n for n in names if n not in row]
            what = f"unknown feature(s) {unknown[:5]}" if unknown else f"missing feature(s) {missing[:5]}"
            raise InputError(what, where=f"row {i}")
        table.append([row[n] for n in names])
    return table


def _numeric_block(
    block: np.ndarray, dtype: str, features: list[str], missing_ok: np.ndarray | None = None
) -> np.ndarray:
    """Validate and convert one numeric block; NaN (missing) only in ``missing_ok`` columns,
    infinity never."""
    if block.dtype == object:
        try:
            block = block.astype(np.float64)
        except (ValueError, TypeError) as exc:
            raise InputError("non-numeric value in a numeric feature", where="rows") from exc
    target = _NUMPY_DTYPES[dtype]
    if not np.issubdtype(target, np.floating):
        if not np.all(np.isfinite(block)) or np.any(block != np.round(block)):
            raise InputError(f"integer features {features[:3]} need whole numbers", where="rows")
        return block.astype(target)
    finite = np.isfinite(block)
    if not finite.all():
        bad = ~finite if missing_ok is None else ~finite & ~(np.isnan(block) & missing_ok)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            value = block[int(r), int(c)]
            raise InputError(
                "infinite value" if np.isinf(value) else
                "missing value (null / NaN): this model does not accept missing values for "
                "this feature",
                where=f"row {int(r)}, feature {features[int(c)]!r}",
            )
    with np.errstate(over="ignore"):
        out = block.astype(target)
    if target is np.float32:
        ok = np.isfinite(out) | np.isnan(block)
        if not ok.all():
            r, c = np.argwhere(~ok)[0]
            raise InputError(
                "value overflows float32", where=f"row {int(r)}, feature {features[int(c)]!r}"
            )
    return np.ascontiguousarray(out)


def table_to_feeds(table: np.ndarray, manifest: Manifest) -> Feeds:
    """Split a validated table into named tensors per :class:`TensorSpec`."""
    col = {f.name: i for i, f in enumerate(manifest.features)}
    allowed = {f.name for f in manifest.features if f.allow_missing}
    feeds: Feeds = {}
    for spec in manifest.inputs:
        idx = [col[f] for f in spec.features]
        contiguous = idx == list(range(idx[0], idx[0] + len(idx)))
        block = table[:, idx[0] : idx[0] + len(idx)] if contiguous else table[:, idx]
        ok = np.array([f in allowed for f in spec.features]) if allowed else None
        feeds[spec.name] = _tensor_from_block(block, spec, ok)
    return feeds


def _tensor_from_block(
    block: np.ndarray, spec: TensorSpec, missing_ok: np.ndarray | None = None
) -> np.ndarray:
    if spec.dtype == "string":
        bad = [v for v in block.ravel().tolist() if not isinstance(v, str)]
        if bad:
            raise InputError(
                f"feature(s) {spec.features[:3]} take strings, got {type(bad[0]).__name__}",
                where="rows",
            )
        arr = block.astype(object)
    else:
        arr = _numeric_block(block, spec.dtype, spec.features, missing_ok)
    # [None] / [None, 1] tensors: keep the declared rank.
    if len(spec.shape) == 1:
        arr = arr.reshape(-1)
    return arr


def rows_to_feeds(rows: Any, manifest: Manifest) -> Feeds:
    return table_to_feeds(rows_to_table(rows, manifest.features), manifest)


def concat_feeds(parts: Sequence[Feeds]) -> Feeds:
    """Concatenate several requests' feeds along the batch axis (used by the batcher)."""
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}


def feeds_rows(feeds: Feeds) -> int:
    return int(next(iter(feeds.values())).shape[0])

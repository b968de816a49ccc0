"""Infer a bundle's input signature from the ``sample`` given to ``pack``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from packserve.bundle import FeatureSpec
from packserve.errors import SampleError


@dataclass(frozen=True)
class SampleTable:
    """The sample in a framework-neutral form, plus what it says about the features."""

    features: list[FeatureSpec]
    table: np.ndarray  # (n, k): float64 when all numeric, else object
    frame: Any | None  # the original DataFrame, when one was given (native models want it)
    # Tensor bundles (issue #16): the sample as named N-D arrays, batch axis first, in the
    # artifact's dtypes; ``features`` is then empty and ``table`` unused.
    tensors: dict[str, np.ndarray] | None = None

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def all_numeric(self) -> bool:
        return all(f.dtype != "string" for f in self.features)

    @property
    def n_rows(self) -> int:
        if self.tensors is not None:
            return int(next(iter(self.tensors.values())).shape[0])
        return int(self.table.shape[0])

    def _missing(self) -> np.ndarray:
        out = np.zeros(self.table.shape, dtype=bool)
        for j, f in enumerate(self.features):
            if f.dtype != "string":
                out[:, j] = np.isnan(self.table[:, j].astype(np.float64))
        return out

    def missing_rows(self) -> np.ndarray:
        """Per row: does it lack a value (NaN) in some numeric feature?"""
        return np.asarray(self._missing().any(axis=1))

    def first_missing(self) -> str:
        """Where the first missing value is, as a user reads it ("feature 'x', row 3")."""
        hit = np.argwhere(self._missing())
        if not len(hit):
            return "none"
        r, c = hit[0]
        return f"feature {self.features[int(c)].name!r}, row {int(r)}"

    @property
    def inputs(self) -> Any:
        """What ``Predictor.predict`` takes for this sample: the table, or the named tensors."""
        return self.tensors if self.tensors is not None else self.table


def _is_dataframe(obj: object) -> bool:
    return type(obj).__name__ == "DataFrame" and hasattr(obj, "dtypes")


def sample_table(
    sample: Any,
    *,
    feature_names: Sequence[str] | None = None,
    model: Any = None,
    expected_width: int | None = None,
) -> SampleTable:
    """Validate ``sample`` (>= 1 row, finite numbers) and name its features.

    Names come from, in order: the DataFrame's columns, ``feature_names``, the model's
    ``feature_names_in_`` (scikit-learn), else ``f0..fN``.
    """
    if sample is None:
        raise SampleError("pack needs a sample (array or DataFrame with at least one row)")
    frame = None
    if _is_dataframe(sample):
        sample = _match_model_columns(sample, model, feature_names)
        frame = sample
        names = [str(c) for c in sample.columns]
        kinds = []
        for col in sample.columns:
            dt = sample[col].dtype
            kinds.append("float32" if getattr(dt, "kind", "O") in "fiub" else "string")
        table = sample.to_numpy(dtype=object)
        if all(k == "float32" for k in kinds):
            table = table.astype(np.float64)
    else:
        try:
            table = np.asarray(sample, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise SampleError(
                "sample must be numeric; pass a DataFrame for models with string columns"
            ) from exc
        if table.ndim == 1:
            table = table.reshape(1, -1)
        if table.ndim != 2:
            raise SampleError(f"sample must be 2-D (rows, features); got {table.ndim}-D")
        names = list(feature_names) if feature_names is not None else []
        if not names:
            fin = getattr(model, "feature_names_in_", None)
            names = [str(n) for n in fin] if fin is not None else []
        if not names:
            names = [f"f{i}" for i in range(table.shape[1])]
        kinds = ["float32"] * table.shape[1]
    if table.shape[0] < 1:
        raise SampleError("sample has no rows; give at least one (more rows = stronger parity check)")
    if len(names) != table.shape[1]:
        raise SampleError(f"{len(names)} feature names for {table.shape[1]} sample columns")
    if len(set(names)) != len(names):
        raise SampleError("feature names must be unique")
    if expected_width is not None and table.shape[1] != expected_width:
        raise SampleError(
            f"sample has {table.shape[1]} columns but the model expects {expected_width}"
        )
    numeric_cols = [i for i, k in enumerate(kinds) if k != "string"]
    if numeric_cols:
        block = table[:, numeric_cols].astype(np.float64)
        numeric_names = [names[i] for i in numeric_cols]
        _refuse_infinite(block, numeric_names)  # missing values (NaN) are decided by pack
        if np.isnan(block).all():
            raise SampleError(
                "every numeric value of the sample is missing (NaN); parity needs real values"
            )
    for i, kind in enumerate(kinds):
        if kind == "string":
            _refuse_missing_text(table[:, i], names[i])
    features = [FeatureSpec(name=n, dtype=k) for n, k in zip(names, kinds, strict=True)]  # type: ignore[arg-type]
    return SampleTable(features=features, table=table, frame=frame)


def _refuse_infinite(block: np.ndarray, names: list[str]) -> None:
    bad = np.isinf(block)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise SampleError(
            f"sample row {int(r)}, feature {names[int(c)]!r} is infinite; infinity is never a "
            "valid feature value (missing values are NaN / empty cells)"
        )


def _refuse_missing_text(column: np.ndarray, name: str) -> None:
    for r, v in enumerate(column.tolist()):
        if not isinstance(v, str):
            raise SampleError(
                f"sample row {r}, text feature {name!r} is missing; packserve passes missing "
                "values only for numeric features (fill text gaps, e.g. with 'missing')"
            )


def _match_model_columns(frame: Any, model: Any, feature_names: Sequence[str] | None) -> Any:
    """Put a DataFrame's columns in the order the model was fitted with (its
    ``feature_names_in_``, else the given ``feature_names``); name any mismatch."""
    fin = getattr(model, "feature_names_in_", None)
    if fin is None:
        fin = feature_names
    if fin is None:
        return frame
    expected = [str(c) for c in fin]
    have = [str(c) for c in frame.columns]
    if have == expected:
        return frame
    missing = [c for c in expected if c not in have]
    extra = [c for c in have if c not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"lacks column(s) {missing[:5]}")
        if extra:
            parts.append(f"has unexpected column(s) {extra[:5]}")
        raise SampleError(
            f"sample DataFrame {' and '.join(parts)}; the model's features are {expected[:10]}"
        )
    by_name = {str(c): c for c in frame.columns}
    return frame[[by_name[n] for n in expected]]


def model_width(model: Any) -> int | None:
    n = getattr(model, "n_features_in_", None)
    return int(n) if n is not None else None

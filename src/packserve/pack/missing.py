"""Which features may be missing, measured rather than assumed.

A model "accepts missing values" for a feature only when both sides do the same thing with
them: the native model predicts on a row where that feature is NaN (XGBoost's default
direction, LightGBM's missing type, HistGradientBoosting's learned side, an imputer in the
pipeline...) *and* the exported artifact reproduces that prediction within the parity
tolerance. Converters differ here — skl2onnx turns a scikit-learn DecisionTree's learned
missing-value side into a plain ``<`` split, and ``SimpleImputer(add_indicator=True)`` drops
the indicator — so nothing is taken from the model's type.

The probe: copies of the first sample rows with one feature removed at a time (every numeric
feature), predicted natively and by the artifact in one call each. A feature the native
model refuses (it raises, or predicts NaN) is not allowed; one the artifact gets wrong is not
allowed either, and the manifest says why. Rows of the sample that already have missing
values are part of the main parity check (see :func:`packserve.pack.build.finish`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from packserve.errors import PackError, PackserveError, SampleError
from packserve.pack.parity import NativeOutput, label_strings
from packserve.pack.signature import SampleTable
from packserve.runtime.prediction import Prediction

ROWS_PER_FEATURE = 16
NativeFn = Callable[[SampleTable], NativeOutput]
PredictFn = Callable[[np.ndarray], Prediction]


@dataclass
class MissingReport:
    """The outcome of the probe, per numeric feature."""

    allowed: list[str] = field(default_factory=list)
    native_refuses: list[str] = field(default_factory=list)
    artifact_wrong: dict[str, float] = field(default_factory=dict)
    rows: int = 0
    max_abs_diff: float = 0.0

    def check(self, tolerance: float) -> dict[str, Any]:
        """The entry recorded in the manifest's ``parity.checks``."""
        return {
            "check": "missing values",
            "rows": self.rows,
            "features_allowed": list(self.allowed),
            "native_refuses": list(self.native_refuses),
            "artifact_wrong": {k: float(v) for k, v in self.artifact_wrong.items()},
            "max_abs_diff": self.max_abs_diff,
            "tolerance": tolerance,
            # A refused feature is not a failure: the bundle refuses missing values for it.
            "passed": True,
        }

    def notes(self) -> list[str]:
        out: list[str] = []
        if self.artifact_wrong:
            worst = ", ".join(f"{k!r} ({'labels differ' if np.isinf(v) else f'max |Δ| {v:.3g}'})"
                              for k, v in list(self.artifact_wrong.items())[:5])
            out.append(
                "the native model accepts missing values but the ONNX conversion handles them "
                f"differently for {worst}: missing values are refused for those features"
            )
        return out


def probe_table(sample: SampleTable, numeric: list[int], per_feature: int) -> tuple[SampleTable, np.ndarray]:
    """Copies of the first ``per_feature`` sample rows, one numeric feature set to NaN per
    copy; plus, for each probe row, the index of the feature it lacks."""
    k = min(per_feature, sample.n_rows)
    base = sample.table[:k]
    blocks = []
    for j in numeric:
        block = base.copy()
        block[:, j] = np.nan
        blocks.append(block)
    table = np.concatenate(blocks, axis=0)
    which = np.repeat(np.asarray(numeric), k)
    frame = None
    if sample.frame is not None:
        frame = sample.frame.iloc[:k]
        frame = frame.iloc[np.tile(np.arange(k), len(numeric))].reset_index(drop=True)
        for pos, j in enumerate(numeric):
            col = frame.columns[j]
            frame[col] = frame[col].astype(np.float64)
            frame.loc[pos * k:(pos + 1) * k - 1, col] = np.nan
    return replace(sample, table=table, frame=frame), which


def _native_nan(out: NativeOutput) -> np.ndarray:
    """Per row: did the native model answer NaN (it does not really take the value)?"""
    parts = [a for a in (out.probabilities, out.values) if a is not None]
    if out.outputs is not None:  # named outputs: any float output NaN
        floats = [np.asarray(a, dtype=np.float64) for a in out.outputs.values()
                  if np.asarray(a).dtype.kind == "f"]
        if floats:
            n = floats[0].shape[0]
            return np.asarray(np.column_stack([np.isnan(a.reshape(n, -1)).any(axis=1)
                                               for a in floats]).any(axis=1))
    if not parts:
        return np.zeros(0, dtype=bool)
    arr = np.asarray(parts[0], dtype=np.float64)
    return np.asarray(np.isnan(arr.reshape(arr.shape[0], -1)).any(axis=1))


def row_diffs(native: NativeOutput, got: Prediction) -> np.ndarray:
    """Per row: max |Δ| of probabilities (inf where labels disagree) or of values; for
    named outputs the worst of them (labels must agree)."""
    if native.outputs is not None:
        assert got.outputs is not None
        n = len(got)
        worst = np.zeros(n)
        for name, ref in native.outputs.items():
            mine = np.asarray(got.outputs[name])
            if np.asarray(ref).dtype.kind != "f":
                same = label_strings(ref).reshape(n, -1) == label_strings(mine).reshape(n, -1)
                worst = np.where(same.all(axis=1), worst, np.inf)
            else:
                d = np.abs(ref.reshape(n, -1) - mine.reshape(n, -1).astype(np.float64))
                worst = np.maximum(worst, d.max(axis=1))
        return worst
    if native.values is not None:
        assert got.values is not None
        nv = np.asarray(native.values, dtype=np.float64).reshape(got.values.shape)
        d = np.abs(nv - got.values.astype(np.float64))
        return np.asarray(d.reshape(d.shape[0], -1).max(axis=1))
    assert native.labels is not None and got.labels is not None
    same = np.asarray(native.labels).reshape(-1).astype(str) == got.labels.reshape(-1).astype(str)
    d = np.zeros(len(same))
    if native.probabilities is not None and got.probabilities is not None:
        d = np.abs(np.asarray(native.probabilities) - got.probabilities).max(axis=1)
    return np.where(same, d, np.inf)


def _native_per_feature(native_fn: NativeFn, probe: SampleTable, which: np.ndarray,
                        names: list[str]) -> tuple[NativeOutput | None, set[int]]:
    """Native predictions on the probe; when the whole probe is refused, find which features
    the model refuses one by one (their rows are then dropped from the comparison)."""
    with contextlib.suppress(Exception):  # else some feature is refused: find which below
        return native_fn(probe), set()
    refused: set[int] = set()
    for j in np.unique(which).tolist():
        rows = which == j
        sub = replace(probe, table=probe.table[rows],
                      frame=None if probe.frame is None else probe.frame[rows].reset_index(drop=True))
        try:
            native_fn(sub)
        except Exception:
            refused.add(int(j))
    return None, refused


def native_or_refuse(native_fn: NativeFn, sample: SampleTable, model_name: str) -> NativeOutput:
    """The native predictions on the sample, or a message a user can act on: a model that
    refuses the sample's missing values is named with the feature that has them."""
    try:
        return native_fn(sample)
    except PackserveError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        if sample.missing_rows().any():
            raise SampleError(
                f"the sample has missing values ({sample.first_missing()}) but {model_name} "
                f"does not accept missing values ({type(exc).__name__}: {first}); fill them, "
                "or add an imputer to the pipeline"
            ) from None
        raise PackError(
            f"{model_name} could not predict the sample: {type(exc).__name__}: {first}"
        ) from None


def measure(
    sample: SampleTable,
    native_fn: NativeFn,
    predict_fn: PredictFn,
    *,
    tolerance: float,
    per_feature: int = ROWS_PER_FEATURE,
) -> MissingReport:
    """Probe every numeric feature; see the module docstring."""
    names = sample.names
    numeric = [i for i, f in enumerate(sample.features) if f.dtype != "string"]
    report = MissingReport()
    if not numeric:
        return report
    probe, which = probe_table(sample, numeric, per_feature)
    native, refused = _native_per_feature(native_fn, probe, which, names)
    if native is None:
        keep = ~np.isin(which, list(refused))
        if not keep.any():
            report.native_refuses = [names[j] for j in numeric]
            return report
        probe = replace(probe, table=probe.table[keep],
                        frame=None if probe.frame is None else probe.frame[keep].reset_index(drop=True))
        which = which[keep]
        native = native_fn(probe)
    nan_rows = _native_nan(native)
    refused |= {int(j) for j in np.unique(which[nan_rows])} if nan_rows.size else set()
    diffs = row_diffs(native, predict_fn(probe.table))
    report.rows = len(which)
    for j in numeric:
        if j in refused:
            report.native_refuses.append(names[j])
            continue
        worst = float(diffs[which == j].max())
        if worst <= tolerance:
            report.allowed.append(names[j])
            report.max_abs_diff = max(report.max_abs_diff, worst)
        else:
            report.artifact_wrong[names[j]] = worst
    return report


__all__ = [
    "ROWS_PER_FEATURE", "MissingReport", "measure", "native_or_refuse", "probe_table", "row_diffs",
]

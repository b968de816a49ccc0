"""Fidelity probes for N-d tensor models: derive them from the sample, export with them, compare.

Each input is varied by its kind (floats jittered, refitted, negated, scaled; integers
resampled within the sample's range; booleans stay boolean; variable axes get another
length). Outputs are compared per output name within ``atol + rtol x max|eager output|``
(:mod:`.tensor` holds the sample and the eager calls these probes go through).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from packserve.pack.families.torch.export import require_torch
from packserve.pack.families.torch.tensor import (
    MAX_SAMPLE_ROWS,
    PROBE_BUDGET_BYTES,
    Arrays,
    TensorProbe,
    TensorSample,
)


def make_probes(ts: TensorSample, *, seed: int = 0) -> list[TensorProbe]:
    """Deterministic probes from the sample, each input varied by its kind."""
    rng = np.random.default_rng(seed)
    x = ts.arrays
    n = next(iter(x.values())).shape[0]
    row_bytes = max(1, sum(int(v[:1].nbytes) for v in x.values()))
    cap = max(2, PROBE_BUDGET_BYTES // row_bytes)
    big = min(64, cap)

    def rows(idx: np.ndarray) -> Arrays:
        return {k: v[idx] for k, v in x.items()}

    def vary(base: Arrays, f: Callable[[np.ndarray], np.ndarray], rows_n: int) -> Arrays:
        out = {}
        for k, v in base.items():
            kind = v.dtype.kind
            if kind == "f":
                with np.errstate(over="ignore"):
                    out[k] = f(v.astype(np.float64)).astype(v.dtype)
            elif kind in "iu":
                lo, hi = int(x[k].min()), int(x[k].max())
                out[k] = rng.integers(lo, hi + 1, v.shape).astype(v.dtype)
            else:
                out[k] = rng.random(v.shape) < 0.5
        return out

    probes = [
        TensorProbe("sample", rows(np.arange(min(n, MAX_SAMPLE_ROWS, cap))), "the sample given to pack"),
        TensorProbe("batch_1", rows(np.arange(1)), "batch size 1"),
    ]
    r7 = rows(rng.integers(0, n, 7))
    probes.append(TensorProbe("batch_7", vary(r7, lambda v: v + rng.normal(0, 0.1, v.shape) * (
        v.std() or 1.0), 7), "batch size 7: jittered sample instances"))
    rb = rows(rng.integers(0, n, big))
    probes.append(TensorProbe(f"batch_{big}", vary(rb, lambda v: rng.normal(
        v.mean(), v.std() or 1.0, v.shape), big), f"batch size {big}: values refitted to the sample"))
    if any(v.dtype.kind == "f" for v in x.values()):
        probes += [
            TensorProbe("negated", vary(rb, lambda v: -v, big), "float inputs negated"),
            TensorProbe("scaled_x10", vary(rb, lambda v: v * 10.0, big), "float inputs x10"),
            TensorProbe("zeros", vary(rows(np.arange(min(n, 7))), np.zeros_like, 7), "float inputs 0"),
        ]
    for spec in ts.specs:
        for axis, axis_name in spec.axes.items():
            if axis == 0:
                continue
            base = rows(np.arange(min(n, 7)))
            length = base[spec.name].shape[axis] + 2
            base[spec.name] = np.take(base[spec.name], np.arange(length), axis=axis, mode="wrap")
            for other in ts.specs:  # the same named axis on another input changes with it
                if other.name != spec.name:
                    for ax2, nm2 in other.axes.items():
                        if ax2 and nm2 == axis_name:
                            base[other.name] = np.take(base[other.name], np.arange(length),
                                                       axis=ax2, mode="wrap")
            probes.append(TensorProbe(f"{spec.name}_axis{axis}_len{length}", base,
                                      f"variable axis {axis_name!r} of {spec.name!r} at length {length}"))
    out = []
    for p in probes:
        with np.errstate(over="ignore"):
            finite = all(np.isfinite(v.astype(np.float64)).all() for v in p.x.values()
                         if v.dtype.kind == "f")
        if finite:
            out.append(p)
    return out


def export_example(ts: TensorSample) -> Arrays:
    """The sample, with at least 2 instances and every variable axis at length >= 2, so the
    exporter never specialises a variable axis to 0/1."""
    out: Arrays = {}
    for spec in ts.specs:
        v = ts.arrays[spec.name][:MAX_SAMPLE_ROWS]
        for axis in spec.axes:
            if v.shape[axis] < 2:
                v = np.take(v, np.arange(2), axis=axis, mode="wrap")
        out[spec.name] = np.ascontiguousarray(v)
    return out


def dynamic_shapes(ts: TensorSample) -> Any:
    torch = require_torch()
    dims: dict[str, Any] = {}
    per = []
    for spec in ts.specs:
        d = {}
        for axis, name in spec.axes.items():
            if name not in dims:
                dims[name] = torch.export.Dim(name.replace("-", "_").replace(" ", "_"))
            d[axis] = dims[name]
        per.append(d)
    if ts.by_keyword:
        return dict(zip(ts.names, per, strict=True))
    return tuple(per)


# --- comparing -------------------------------------------------------------------------


def tolerance(ref: np.ndarray, atol: float, rtol: float) -> float:
    ref = np.asarray(ref, dtype=np.float64)
    finite = np.abs(ref[np.isfinite(ref)])
    return atol + rtol * (float(finite.max()) if finite.size else 0.0)


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    if a.size == 0:
        return 0.0
    with np.errstate(invalid="ignore"):
        d = np.abs(a - b)
    d[(np.isnan(a) & np.isnan(b)) | (np.isinf(a) & (a == b))] = 0.0
    d[np.isnan(d)] = np.inf
    return float(d.max())


def compare(eager: dict[str, Arrays], run: Callable[[Arrays], Arrays], probes: list[TensorProbe],
            runtime: str, atol: float, rtol: float) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []
    for p in probes:
        ref = eager[p.name]
        entry: dict[str, Any] = {"check": "fidelity", "probe": p.name, "rows": p.rows,
                                 "runtime": runtime}
        try:
            got = run(p.x)
        except Exception as exc:
            entry.update(max_abs_diff=float("inf"), tolerance=0.0, passed=False,
                         error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
            checks.append(entry)
            continue
        worst, worst_tol, ok = 0.0, tolerance(next(iter(ref.values())), atol, rtol), True
        for name, r in ref.items():
            tol = tolerance(r, atol, rtol)
            d = max_abs_diff(r, got[name])
            ok = ok and d <= tol
            if d / tol > worst / worst_tol:
                worst, worst_tol = d, tol
        entry.update(max_abs_diff=worst, tolerance=worst_tol, passed=ok)
        checks.append(entry)
    return checks

__all__ = ["compare", "dynamic_shapes", "export_example", "make_probes", "max_abs_diff", "tolerance"]

"""Measure how closely an exported artifact reproduces the native model.

Tolerances (from the foundation issue): labels identical; max |Δprobability| ≤ 1e-5;
regression max |Δ| ≤ 1e-5 × mean |native prediction| (a per-element relative bound is
meaningless near zero in float32). A converter that cannot reach that gets its measured
bound recorded with the reason — never a silently loosened default.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from packserve.bundle import OutputSpec, ParityReport
from packserve.runtime.postprocess import postprocess
from packserve.runtime.prediction import Prediction

PROBA_TOL = 1e-5
REG_REL_TOL = 1e-5


@dataclass(frozen=True)
class NativeOutput:
    labels: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    values: np.ndarray | None = None
    outputs: dict[str, np.ndarray] | None = None  # task='tensor': every raw output by name


def native_output(spec: OutputSpec, raw: dict[str, np.ndarray]) -> NativeOutput:
    """A model's raw outputs as the parity reference, read by the runtime's own
    postprocessing (the sigmoid/softmax/argmax a server applies to the artifact's outputs)."""
    if spec.task == "tensor":
        return NativeOutput(outputs={n: raw[n] for n in spec.names})
    pred = postprocess(raw, SimpleNamespace(outputs=spec))  # type: ignore[arg-type]
    if spec.task == "regression":
        return NativeOutput(values=pred.values)
    return NativeOutput(labels=pred.labels, probabilities=pred.probabilities)


def labels_are_argmax(native: NativeOutput, classes: list[Any]) -> bool:
    """Whether the native labels are ``classes[argmax(probabilities)]`` on every sample row.

    When they are, a bundle derives labels from its probabilities (ties go to the first
    class, as in scikit-learn and the boosters) instead of trusting the graph's label
    tensor, whose tie-breaking differs (ONNX tree ensembles pick the last of tied classes).
    """
    if native.labels is None or native.probabilities is None:
        return False
    probs = np.asarray(native.probabilities)
    if probs.ndim != 2 or probs.shape[1] != len(classes):
        return False
    derived = np.asarray(classes, dtype=object)[np.argmax(probs, axis=1)]
    nl = np.asarray(native.labels).reshape(-1)
    return bool(np.all(nl.astype(str) == derived.astype(str)))


def compare(
    native: NativeOutput,
    exported: Prediction,
    *,
    proba_tol: float = PROBA_TOL,
    reg_rel_tol: float = REG_REL_TOL,
    notes: list[str] | None = None,
) -> ParityReport:
    notes = list(notes or [])
    n = len(exported)
    if native.outputs is not None:
        return _compare_outputs(native.outputs, exported, reg_rel_tol, notes)
    if native.values is not None:
        assert exported.values is not None
        nv = np.asarray(native.values, dtype=np.float64).reshape(exported.values.shape)
        diff = float(np.max(np.abs(nv - exported.values.astype(np.float64)))) if n else 0.0
        scale = float(np.mean(np.abs(nv))) if n else 0.0
        tol = reg_rel_tol * max(scale, 1e-12)
        return ParityReport(
            rows=n,
            max_abs_diff_value=diff,
            tolerance=tol,
            tolerance_basis=f"{reg_rel_tol:g} x mean|native prediction| ({scale:.6g})",
            passed=diff <= tol,
            notes=notes,
        )
    assert native.labels is not None and exported.labels is not None
    nl = np.asarray(native.labels).reshape(-1)
    el = exported.labels.reshape(-1)
    agree = float(np.mean(nl.astype(str) == el.astype(str))) if n else 1.0
    pdiff = 0.0
    if native.probabilities is not None and exported.probabilities is not None:
        pdiff = float(np.max(np.abs(native.probabilities - exported.probabilities)))
    passed = agree == 1.0 and pdiff <= proba_tol
    return ParityReport(
        rows=n,
        label_agreement=agree,
        max_abs_diff_probability=pdiff,
        tolerance=proba_tol,
        tolerance_basis="absolute, on class probabilities; labels must all agree",
        passed=passed,
        notes=notes,
    )


def label_strings(labels: Any) -> np.ndarray:
    """Labels compared as text; booleans as 0/1 (converters emit bool classes as int64)."""
    arr = np.asarray(labels).reshape(-1)
    return (arr.astype(np.int64) if arr.dtype.kind == "b" else arr).astype(str)


def _compare_outputs(
    native: dict[str, np.ndarray], exported: Prediction, rel_tol: float, notes: list[str]
) -> ParityReport:
    """task='tensor': every output within ``rel_tol`` x max|native output| (its own scale)."""
    assert exported.outputs is not None
    worst, worst_tol, passed = 0.0, 0.0, True
    per: list[dict[str, Any]] = []
    for name, ref in native.items():
        if np.asarray(ref).dtype.kind not in "f":  # labels / cluster ids: must all agree
            got_l = label_strings(exported.outputs[name])
            ref_l = label_strings(ref)
            ok = got_l.shape == ref_l.shape and bool(np.all(got_l == ref_l))
            passed = passed and ok
            if not ok:
                notes.append(f"output {name!r}: labels differ from the native ones")
            per.append({"check": "output_parity", "output": name,
                        "agreement": float(np.mean(got_l == ref_l)) if ok or
                        got_l.shape == ref_l.shape else 0.0, "passed": ok})
            continue
        ref64 = np.asarray(ref, dtype=np.float64)
        got = np.asarray(exported.outputs[name], dtype=np.float64)
        finite = np.abs(ref64[np.isfinite(ref64)])
        scale = float(finite.max()) if finite.size else 0.0
        tol = rel_tol * max(scale, 1.0)
        diff = float(np.max(np.abs(ref64 - got.reshape(ref64.shape)))) if ref64.size else 0.0
        ok = got.size == ref64.size and diff <= tol
        passed = passed and ok
        per.append({"check": "output_parity", "output": name, "max_abs_diff": diff,
                    "tolerance": tol, "passed": ok})
        if diff / tol >= worst / max(worst_tol, 1e-300):
            worst, worst_tol = diff, tol
    return ParityReport(
        rows=len(exported), max_abs_diff_value=worst, tolerance=worst_tol,
        tolerance_basis=f"{rel_tol:g} x max(1, max|native output|), per output",
        passed=passed, notes=notes, checks=per,
    )


def describe_failure(report: ParityReport) -> str:
    if report.max_abs_diff_value is not None:
        return (
            f"parity failed on {report.rows} rows: max |Δvalue| = {report.max_abs_diff_value:.3g} "
            f"> tolerance {report.tolerance:.3g} ({report.tolerance_basis})"
        )
    return (
        f"parity failed on {report.rows} rows: label agreement {report.label_agreement:.4%}, "
        f"max |Δprobability| = {report.max_abs_diff_probability:.3g} (tolerance {report.tolerance:g})"
    )

"""Shared tail of every packer: manifest, parity measurement, atomic write.

A framework module only exports an artifact into a staging directory and says how its
outputs read (:class:`Export`); this module loads that artifact with the *real* runtime,
measures parity against the native predictions, and writes the bundle only if it passes.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from packserve.bundle import (
    Manifest,
    OutputSpec,
    ParityReport,
    TensorSpec,
    prepare_output_dir,
    write_bundle,
)
from packserve.errors import BundleError, PackError, ParityError, SampleError
from packserve.pack import missing, parity
from packserve.pack.progress import step
from packserve.pack.signature import SampleTable
from packserve.runtime import RuntimeOptions
from packserve.runtime import _open as open_predictor
from packserve.runtime.base import Predictor
from packserve.runtime.prediction import Prediction
from packserve.signing import SignatureInfo

MAX_EXAMPLES = 5


@dataclass
class Export:
    """What a framework packer produced in the staging directory."""

    artifact: str
    inputs: list[TensorSpec]
    outputs: OutputSpec
    framework: str
    framework_version: str
    model_type: str
    format: str = "onnx"
    converters: dict[str, str] = field(default_factory=dict)
    opsets: dict[str, int] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    proba_tol: float = parity.PROBA_TOL
    reg_rel_tol: float = parity.REG_REL_TOL
    # Appended to a parity failure's message: what usually causes it for this export.
    failure_hint: str | None = None
    # The export's own checks (determinism, fidelity probes), added to the parity report;
    # one that failed fails it.
    checks: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class PackResult:
    path: Path
    manifest: Manifest
    signature: SignatureInfo | None = None
    """Set when ``pack(..., sign_key=...)`` signed the bundle (``model.sig``)."""

    @property
    def parity(self) -> ParityReport:
        return self.manifest.parity


@contextmanager
def discard_on_error(staging: Path) -> Iterator[Path]:
    """Remove ``staging`` if the block fails, so nothing half-made is left behind."""
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextmanager
def staged(out_dir: str | os.PathLike[str], *, force: bool) -> Iterator[Path]:
    """A fresh staging directory next to ``out_dir`` (refusing an existing target without
    ``force``), removed if the block fails; :func:`finish` moves it into place on success."""
    with discard_on_error(prepare_output_dir(out_dir, force=force)) as staging:
        yield staging


MAX_TENSOR_EXAMPLE_VALUES = 256


def json_examples(sample: SampleTable) -> list[Any]:
    if sample.tensors is not None:  # one instance, only when small enough for OpenAPI
        size = sum(int(v[0].size) for v in sample.tensors.values())
        if size > MAX_TENSOR_EXAMPLE_VALUES:
            return []
        return [{k: v[0].tolist() for k, v in sample.tensors.items()}]
    rows = sample.table[:MAX_EXAMPLES].tolist()
    return [[v if isinstance(v, str) else None if v != v else float(v) for v in row]  # NaN: missing
            for row in rows]


def draft_manifest(
    exp: Export, sample: SampleTable, *, name: str, version: str, example_rows: bool = True
) -> Manifest:
    """The manifest before parity. ``example_rows=False`` stores no sample rows: the bundle
    (and the OpenAPI document a server builds from it) then carries none of the user's data."""
    return Manifest(
        name=name,
        version=version,
        format=exp.format,  # type: ignore[arg-type]
        artifact=exp.artifact,
        task=exp.outputs.task,
        signature="tensor" if sample.tensors is not None else "table",
        features=sample.features,
        inputs=exp.inputs,
        outputs=exp.outputs,
        framework=exp.framework,
        framework_version=exp.framework_version,
        model_type=exp.model_type,
        converters=exp.converters,
        opsets=exp.opsets,
        parity=ParityReport(rows=0, tolerance=0.0, passed=False),
        examples=json_examples(sample) if example_rows else [],
        export=exp.export,
        notes=exp.notes,
    )


def open_staged(staging: Path, manifest: Manifest, **opts: Any) -> Predictor:
    """Load the staged artifact with the real runtime (as a server will)."""
    return open_predictor(staging, manifest, RuntimeOptions(**opts))


def _missing_value_failure(
    sample: SampleTable, native: parity.NativeOutput, exported: Prediction, tolerance: float
) -> str | None:
    """When parity fails only on the sample's rows with missing values, say so: the
    converter handles missing values differently from the native model."""
    gaps = sample.missing_rows()
    if not gaps.any() or gaps.all():
        return None
    diffs = missing.row_diffs(native, exported)
    if float(diffs[~gaps].max()) > tolerance:
        return None
    worst = float(diffs[gaps].max())
    how = "labels differ" if np.isinf(worst) else f"max |Δ| {worst:.3g}"
    return (
        f"parity holds on the sample's {int((~gaps).sum())} complete rows but fails on its "
        f"{int(gaps.sum())} rows with missing values ({how}): the converter handles missing "
        "values differently from the native model; drop the rows with missing values from the "
        "sample to pack it with missing values refused"
    )


def _measure(
    exp: Export,
    sample: SampleTable,
    native: parity.NativeOutput,
    staging: Path,
    manifest: Manifest,
    native_fn: missing.NativeFn | None,
) -> tuple[ParityReport, str | None]:
    """Open the staged artifact with the real runtime (as a server will) and compare; then
    probe which features may be missing (only when parity holds). Returns the report and,
    for a failure on the sample's rows with missing values only, why."""
    try:
        predictor = open_staged(staging, manifest, intra_op_threads=0)
    except BundleError as exc:
        reason = (exc.detail_for_logs or exc.message).replace(str(staging), "<bundle>")
        raise PackError(
            f"the exported {exp.model_type.rsplit('.', 1)[-1]} graph does not load in ONNX "
            f"Runtime (a converter bug or an unsupported model option): {reason[:400]}"
        ) from exc
    probe = None
    try:
        exported = predictor.predict(sample.inputs)
        report = parity.compare(
            native, exported, proba_tol=exp.proba_tol, reg_rel_tol=exp.reg_rel_tol,
            notes=exp.notes,
        )
        why = None if report.passed or sample.tensors is not None else _missing_value_failure(
            sample, native, exported, report.tolerance)
        if native_fn is not None and report.passed:
            step("checking missing values")
            probe = missing.measure(sample, native_fn, predictor.predict,
                                    tolerance=report.tolerance)
    finally:
        predictor.close()
    allowed = set(probe.allowed) if probe is not None else set()
    for f in manifest.features:
        f.allow_missing = f.name in allowed
    if allowed and manifest.schema_version < 2:  # an older reader must not drop the flag
        manifest.schema_version = 2
    if probe is not None:
        report.checks.append(probe.check(report.tolerance))
        report.notes.extend(probe.notes())
        manifest.notes.extend(probe.notes())
    if exp.checks:
        report.checks.extend(exp.checks)
        report.passed = report.passed and all(c.get("passed", True) for c in exp.checks)
    return report, why


def finish(
    exp: Export,
    sample: SampleTable,
    native: parity.NativeOutput,
    staging: Path,
    out_dir: str | os.PathLike[str],
    *,
    name: str,
    version: str,
    allow_parity_failure: bool = False,
    example_rows: bool = True,
    native_fn: missing.NativeFn | None = None,
) -> PackResult:
    """Load the staged artifact, measure parity on ``sample``, write the bundle or refuse.

    With ``native_fn`` (the native model's predictions on any sample-shaped table), which
    features may be missing is measured too (:mod:`packserve.pack.missing`) and recorded per
    feature; without it no feature accepts missing values.
    The staging directory is removed on every failure, so nothing half-made is left.
    """
    manifest = draft_manifest(exp, sample, name=name, version=version, example_rows=example_rows)
    with discard_on_error(staging):
        if native_fn is None and sample.missing_rows().any():
            raise SampleError(
                f"the sample has missing values ({sample.first_missing()}); "
                f"{exp.model_type.rsplit('.', 1)[-1]} bundles take no missing values"
            )
        if native_fn is not None:  # the probe feeds NaN anywhere; final flags come after it
            for f in manifest.features:
                f.allow_missing = f.dtype != "string"
        step("checking parity")
        manifest.parity, why_missing = _measure(
            exp, sample, native, staging, manifest, native_fn)
        if not manifest.parity.passed:
            msg = parity.describe_failure(manifest.parity)
            if why_missing:
                msg += f"; {why_missing}"
            elif exp.failure_hint:
                msg += f" ({exp.failure_hint})"
            if not allow_parity_failure:
                raise ParityError(msg + "; no bundle written", report=manifest.parity)
            manifest.notes.append("WRITTEN DESPITE PARITY FAILURE (allow_parity_failure): " + msg)
        step("writing bundle")
        path = write_bundle(staging, out_dir, manifest)
    return PackResult(path=path, manifest=manifest)

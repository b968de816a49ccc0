"""torch.nn.Module -> ONNX (default) or TorchScript bundle, with fidelity *proved*.

The two classic PyTorch deployment bugs are guarded here:

* **training mode** — the model is switched to eval mode for the export (Dropout and
  BatchNorm become deterministic), the caller's per-module modes are restored afterwards,
  and the manifest says the switch happened; eval-mode determinism is then checked;
* **traced control flow** — a trace records the one branch its example took. Every
  artifact is compared with the eager model on the sample *and* on probes of other batch
  sizes and value ranges (:mod:`packserve.pack.torch.fidelity`); ``method="auto"`` falls
  back from ``trace`` to ``script`` when the trace is unfaithful, and anything unfaithful
  is refused. The dynamo ONNX exporter refuses data-dependent branches outright.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from packserve.bundle import Label, OutputSpec, TensorSpec, prepare_output_dir
from packserve.errors import ConfigError, OutputExistsError, PackError, ParityError, SampleError
from packserve.pack import parity
from packserve.pack.build import Export, PackResult, draft_manifest, finish, open_staged
from packserve.pack.progress import step
from packserve.pack.signature import SampleTable, sample_table
from packserve.pack.torch import fidelity as fid
from packserve.pack.torch.common import TRACE_ADVICE, eval_mode
from packserve.pack.torch.common import input_dtype as _input_dtype
from packserve.pack.torch.common import onnx_graph_check as _onnx_graph_check
from packserve.pack.torch.common import version as _version
from packserve.pack.torch.export import (
    INPUT_NAME,
    OUTPUT_NAME,
    Exported,
    export_onnx,
    export_torchscript,
    require_torch,
)
from packserve.pack.torch.nd import pack_tensor_model
from packserve.pack.torch.outputs import final_layer, output_spec
from packserve.pack.torch.tensor import is_tensor_sample
from packserve.runtime.postprocess import postprocess

FORMATS = ("onnx", "torchscript")
METHODS = ("auto", "trace", "script")



def _sample(sample: Any, feature_names: list[str] | None) -> SampleTable:
    torch = require_torch()
    if isinstance(sample, torch.Tensor):
        sample = sample.detach().cpu().double().numpy()
    st = sample_table(sample, feature_names=feature_names)
    if not st.all_numeric:
        raise SampleError("a torch model takes one numeric tensor: the sample must be all numeric")
    for f in st.features:
        f.dtype = "float32"
    return st


def _table_output(model: Any, sample: Any) -> bool:
    """Whether the model answers a 2-D float sample with one tensor of rank <= 2 (a table
    model); several outputs or an N-D output need the tensor signature."""
    torch = require_torch()
    try:
        arr = sample.detach().cpu().numpy() if isinstance(sample, torch.Tensor) else np.asarray(
            sample, dtype=np.float64)
    except (TypeError, ValueError):
        return True  # DataFrames with strings etc.: the table path reports it
    if arr.ndim != 2 or arr.shape[0] < 1:
        return True
    dtype, _ = _input_dtype(model)
    with eval_mode(model):
        try:
            with torch.no_grad():
                out = model(torch.from_numpy(np.ascontiguousarray(arr[:2], dtype=dtype)))
        except Exception:
            return True
    return isinstance(out, torch.Tensor) and out.ndim <= 2


def _native(raw: np.ndarray, spec: OutputSpec, manifest_like: Any) -> parity.NativeOutput:
    pred = postprocess({OUTPUT_NAME: raw}, manifest_like)
    if spec.task == "regression":
        return parity.NativeOutput(values=pred.values)
    return parity.NativeOutput(labels=pred.labels, probabilities=pred.probabilities)


def _artifact_checks(
    exp: Export, st: SampleTable, staging: Path, probes: list[fid.Probe],
    eager: dict[str, np.ndarray], dtype: Any, *, name: str, version: str,
    atol: float = fid.ATOL, rtol: float = fid.RTOL,
) -> list[dict[str, Any]]:
    """Load the staged artifact with the real runtime and compare it on every probe.

    ONNX is also run with graph optimizations *disabled*, which is the graph exactly as
    exported (the default optimizer would hide, e.g., a training-mode Dropout).
    """
    manifest = draft_manifest(exp, st, name=name, version=version)
    variants = ["disable", "all"] if exp.format == "onnx" else ["default"]
    checks: list[dict[str, Any]] = []
    for opt in variants:
        kwargs: dict[str, Any] = {"intra_op_threads": 0}
        if exp.format == "onnx":
            kwargs["optimization"] = opt
        predictor = open_staged(staging, manifest, **kwargs)
        label = f"onnxruntime(optimization={opt})" if exp.format == "onnx" else "torch.jit"

        def run(x: np.ndarray, p: Any = predictor) -> np.ndarray:
            raw = p._run_raw({INPUT_NAME: np.ascontiguousarray(x, dtype=dtype)})
            return np.asarray(raw[OUTPUT_NAME])

        try:
            checks += fid.compare_probes(eager, run, probes, label, atol=atol, rtol=rtol)
        finally:
            predictor.close()
    return checks


def pack_model(
    model: Any,
    out_dir: str | os.PathLike[str],
    *,
    sample: Any,
    name: str,
    version: str,
    feature_names: list[str] | None,
    force: bool,
    allow_parity_failure: bool,
    format: str = "onnx",
    method: str = "auto",
    task: str | None = None,
    output: str | None = None,
    classes: list[Label] | None = None,
    threshold: float = 0.5,
    opset_version: int | None = None,
    external_data: bool | None = None,
    example_rows: bool = True,
    fidelity_atol: float | None = None,
    fidelity_rtol: float | None = None,
    dynamic_axes: dict[str, Any] | None = None,
    value_ranges: dict[str, Any] | None = None,
    input_names: list[str] | None = None,
) -> PackResult:
    """Export ``model`` (a ``torch.nn.Module`` or ``torch.export.ExportedProgram``) and write
    the bundle only if it is faithful.

    A 2-D float sample makes a table bundle (named features); any other sample (another
    rank, integer or boolean inputs, a tuple or mapping of inputs), several outputs, an
    output that is not 2-D or ``task='tensor'`` makes a tensor bundle
    (:mod:`packserve.pack.torch.nd`; ``dynamic_axes``, ``value_ranges``, ``input_names``).
    Fidelity passes on a probe when max |artifact - eager| <= ``fidelity_atol`` +
    ``fidelity_rtol`` x max |eager| (raw outputs, before any sigmoid/softmax); defaults
    1e-5 / 1e-5 for tables, 1e-4 / 1e-4 for tensor models (deep float nets).
    """
    torch = require_torch()
    if format not in FORMATS:
        raise ConfigError(f"format must be one of {list(FORMATS)}, got {format!r}")
    if method not in METHODS:
        raise ConfigError(f"method must be one of {list(METHODS)}, got {method!r}")
    if format == "onnx" and method != "auto":
        raise ConfigError(
            f"method={method!r} applies to format='torchscript'; ONNX uses the dynamo exporter"
        )
    is_program = isinstance(model, torch.export.ExportedProgram)
    if not isinstance(model, torch.nn.Module) and not is_program:
        raise PackError(f"{type(model).__name__} is not a torch.nn.Module")
    if Path(out_dir).exists() and not force:  # refuse before seconds of export work
        raise OutputExistsError(
            f"output directory '{out_dir}' already exists (use --force / force=True)"
        )
    if (is_program or dynamic_axes or value_ranges or input_names
            or is_tensor_sample(sample, task) or not _table_output(model, sample)):
        return pack_tensor_model(
            model, out_dir, sample=sample, name=name, version=version, force=force,
            allow_parity_failure=allow_parity_failure, format=format, method=method, task=task,
            output=output, classes=classes, threshold=threshold, opset_version=opset_version,
            external_data=external_data, fidelity_atol=fidelity_atol,
            fidelity_rtol=fidelity_rtol, dynamic_axes=dynamic_axes, value_ranges=value_ranges,
            input_names=input_names, example_rows=example_rows,
        )
    fidelity_atol = fid.ATOL if fidelity_atol is None else fidelity_atol
    fidelity_rtol = fid.RTOL if fidelity_rtol is None else fidelity_rtol
    st = _sample(sample, feature_names)
    dtype, dtype_name = _input_dtype(model)
    x_sample = torch.from_numpy(np.ascontiguousarray(st.table, dtype=dtype))

    with eval_mode(model) as was_training:
        try:
            eager_sample = fid.run_eager(model, st.table, dtype)
        except PackError:
            raise
        except Exception as exc:
            raise SampleError(
                f"{type(model).__name__} failed on the sample ({st.table.shape[0]} x "
                f"{st.table.shape[1]}): {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            ) from exc
        probes = fid.make_probes(st.table)
        step("checking eval-mode determinism")
        determinism = fid.check_determinism(
            model, [p for p in probes if p.name in ("sample", "batch_64")], dtype
        )
        spec, notes = output_spec(
            eager_sample, final_layer(model, x_sample[:2]),
            task=task, output=output, classes=classes, threshold=threshold,
        )
        eager, skipped = fid.eager_on_probes(model, probes, dtype)
        if skipped:
            probes = [p for p in probes if p.name in eager]
            notes.append("fidelity probes skipped because the eager model itself failed on "
                         "them: " + "; ".join(skipped))
        if was_training:
            notes.insert(0, "model was in training mode: exported in eval mode (Dropout off, "
                            "BatchNorm uses running statistics); the caller's mode was restored")
        base = _BaseExport(
            model=model, st=st, spec=spec, notes=notes, dtype=dtype, dtype_name=dtype_name,
            was_training=was_training, requested=method, name=name, version=version,
            allow_parity_failure=allow_parity_failure, atol=fidelity_atol, rtol=fidelity_rtol,
        )
        checks0 = [determinism]
        if format == "onnx":
            exp, staging, checks = _pack_onnx(base, x_sample, out_dir, force, probes, eager,
                                              opset_version, external_data)
        else:
            exp, staging, checks = _pack_torchscript(base, x_sample, out_dir, force, probes,
                                                     eager)
    exp.export["fidelity"] = fid.summary(checks)
    native = _native(eager_sample, spec, draft_manifest(exp, st, name=name, version=version))
    bad = fid.failed(checks)
    if bad:
        exp.notes.append("FIDELITY FAILED: " + fid.describe(bad, probes))
    return finish(
        exp, st, native, staging, out_dir, name=name, version=version,
        allow_parity_failure=allow_parity_failure, extra_checks=checks0 + checks,
        example_rows=example_rows,
    )


class _BaseExport:
    """What every attempt shares; makes :class:`Export` objects per artifact."""

    def __init__(self, *, model: Any, st: SampleTable, spec: OutputSpec, notes: list[str],
                 dtype: Any, dtype_name: str, was_training: bool, requested: str, name: str,
                 version: str, allow_parity_failure: bool, atol: float, rtol: float) -> None:
        self.allow_parity_failure = allow_parity_failure
        self.atol, self.rtol = atol, rtol
        self.tracer_warnings: list[str] = []
        self.model, self.st, self.spec, self.notes = model, st, spec, notes
        self.dtype, self.dtype_name = dtype, dtype_name
        self.was_training, self.requested = was_training, requested
        self.name, self.version = name, version

    def make(self, ex: Exported, fmt: str, extra_notes: list[str]) -> Export:
        torch = require_torch()
        n = len(self.st.features)
        converters = {"torch": torch.__version__}
        if fmt == "onnx":
            converters |= {"onnxscript": _version("onnxscript"), "onnx": _version("onnx")}
        export: dict[str, Any] = {
            "format": fmt,
            "method": ex.method,
            "requested_method": self.requested if fmt == "torchscript" else "dynamo",
            "was_training": self.was_training,
            "exported_in_mode": "eval",
            "export_seconds": round(ex.seconds, 4),
            "input_precision": self.dtype_name,
            **ex.info,
        }
        return Export(
            artifact=ex.artifact,
            inputs=[TensorSpec(name=INPUT_NAME, dtype=self.dtype_name,  # type: ignore[arg-type]
                               shape=[None, n], features=self.st.names)],
            outputs=self.spec,
            framework="torch",
            framework_version=torch.__version__,
            model_type=f"{type(self.model).__module__}.{type(self.model).__qualname__}",
            format=fmt,
            converters=converters,
            export=export,
            notes=[*self.notes, *extra_notes],
        )


def _pack_onnx(
    base: _BaseExport, x: Any, out_dir: str | os.PathLike[str], force: bool,
    probes: list[fid.Probe], eager: dict[str, np.ndarray], opset_version: int | None,
    external_data: bool | None,
) -> tuple[Export, Path, list[dict[str, Any]]]:
    staging = prepare_output_dir(out_dir, force=force)
    try:
        step("exporting with torch.onnx.export (dynamo)")
        ex = export_onnx(base.model, x, staging, opset_version=opset_version,
                         external_data=external_data)
        exp = base.make(ex, "onnx", [])
        import onnx

        proto = onnx.load(str(staging / ex.artifact), load_external_data=False)
        exp.opsets = {d.domain or "": int(d.version) for d in proto.opset_import}
        graph = _onnx_graph_check(staging, ex.artifact)
        if not graph["passed"]:
            raise PackError(
                "the exported ONNX graph contains training-mode or random nodes: "
                + ", ".join(graph["found"][:5])
                + " — the bundle would not predict deterministically; no bundle written"
            )
        step(f"checking fidelity on {len(probes)} probes")
        t0 = time.perf_counter()
        checks = [graph, *_artifact_checks(exp, base.st, staging, probes, eager, base.dtype,
                                           name=base.name, version=base.version,
                                           atol=base.atol, rtol=base.rtol)]
        exp.export["fidelity_seconds"] = round(time.perf_counter() - t0, 4)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    bad = fid.failed(checks)
    if bad and not base.allow_parity_failure:
        shutil.rmtree(staging, ignore_errors=True)
        raise ParityError(
            "the ONNX export is not faithful to the eager model: " + fid.describe(bad, probes)
            + ". If the model branches on tensor values, rewrite the branch with torch.where / "
            "torch.cond, or pack it with format='torchscript', method='script'; no bundle written"
        )
    return exp, staging, checks


def _pack_torchscript(
    base: _BaseExport, x: Any, out_dir: str | os.PathLike[str], force: bool,
    probes: list[fid.Probe], eager: dict[str, np.ndarray],
) -> tuple[Export, Path, list[dict[str, Any]]]:
    methods = ["trace", "script"] if base.requested == "auto" else [base.requested]
    history: list[str] = []
    for i, method in enumerate(methods):
        last = i == len(methods) - 1
        staging = prepare_output_dir(out_dir, force=force)
        try:
            try:
                step(f"exporting with torch.jit.{method}")
                ex = export_torchscript(base.model, x, staging, method)
            except PackError as exc:
                if last:
                    raise
                history.append(f"{method} failed ({exc.message}); fell back to script")
                shutil.rmtree(staging, ignore_errors=True)
                continue
            exp = base.make(ex, "torchscript", [*history])
            if ex.info.get("tracer_warnings"):
                exp.notes.append(
                    f"torch.jit.trace emitted {len(ex.info['tracer_warnings'])} TracerWarning(s): "
                    + " | ".join(ex.info["tracer_warnings"][:3])
                )
            if method == "trace":
                exp.failure_hint = TRACE_ADVICE
            step(f"checking fidelity on {len(probes)} probes")
            t0 = time.perf_counter()
            checks = _artifact_checks(exp, base.st, staging, probes, eager, base.dtype,
                                      name=base.name, version=base.version,
                                      atol=base.atol, rtol=base.rtol)
            exp.export["fidelity_seconds"] = round(time.perf_counter() - t0, 4)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        bad = fid.failed(checks)
        if not bad:
            if history:
                exp.export["fallback"] = history
                exp.export["tracer_warnings"] = base.tracer_warnings
            return exp, staging, checks
        what = fid.describe(bad, probes)
        if not last:
            tw = ex.info.get("tracer_warnings", [])
            base.tracer_warnings = tw
            warn = (f" ({len(tw)} TracerWarning(s), first: {tw[0].split('. ')[0]})" if tw
                    else " (no TracerWarning was emitted)")
            history.append(f"trace was unfaithful on {what}{warn}; fell back to script")
            shutil.rmtree(staging, ignore_errors=True)
            continue
        if base.allow_parity_failure:
            return exp, staging, checks
        shutil.rmtree(staging, ignore_errors=True)
        advice = TRACE_ADVICE if method == "trace" else (
            "the scripted model differs from the eager model; check forward() for Python-only "
            "behaviour that TorchScript compiles differently"
        )
        raise ParityError(
            f"the TorchScript {method} of {type(base.model).__name__} is not faithful to the eager "
            f"model: {what}. {advice}; no bundle written"
        )
    raise AssertionError("unreachable")  # pragma: no cover


__all__ = ["FORMATS", "METHODS", "eval_mode", "pack_model"]

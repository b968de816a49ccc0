"""A torch model over a table (2-D float sample, named features) -> ONNX (default) or
TorchScript bundle, with fidelity *proved*; the tensor counterpart is :mod:`.nd`.

The two classic PyTorch deployment bugs are guarded here:

* **training mode** — the model is switched to eval mode for the export (Dropout and
  BatchNorm become deterministic), the caller's per-module modes are restored afterwards,
  and the manifest says the switch happened; eval-mode determinism is then checked;
* **traced control flow** — a trace records the one branch its example took. Every
  artifact is compared with the eager model on the sample *and* on probes of other batch
  sizes and value ranges (:mod:`packserve.pack.families.torch.fidelity`); ``method="auto"`` falls
  back from ``trace`` to ``script`` when the trace is unfaithful, and anything unfaithful
  is refused. The dynamo ONNX exporter refuses data-dependent branches outright.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from packserve.bundle import TensorSpec
from packserve.errors import PackError, SampleError
from packserve.pack.build import Export
from packserve.pack.families.torch import fidelity as fid
from packserve.pack.families.torch.common import (
    TRAINING_NOTE,
    TorchOptions,
    eval_mode,
    final_layer,
    input_dtype,
)
from packserve.pack.families.torch.export import (
    INPUT_NAME,
    OUTPUT_NAME,
    Exported,
    export_onnx,
    export_torchscript,
    require_torch,
)
from packserve.pack.families.torch.plan import Checks, Plan
from packserve.pack.family import ExportJob, dist_version
from packserve.pack.outputs import output_spec
from packserve.pack.parity import NativeOutput, native_output
from packserve.pack.progress import step
from packserve.pack.signature import SampleTable, sample_table
from packserve.runtime.base import Predictor


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


def table_output(model: Any, sample: Any) -> bool:
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
    dtype, _ = input_dtype(model)
    with eval_mode(model):
        try:
            with torch.no_grad():
                out = model(torch.from_numpy(np.ascontiguousarray(arr[:2], dtype=dtype)))
        except Exception:
            return True
    return isinstance(out, torch.Tensor) and out.ndim <= 2


class TablePlan(Plan):
    """The eager model on the sample and the fidelity probes, the output spec, and the export
    (ONNX, or TorchScript falling back from trace to script) checked on every probe."""

    def __init__(self, model: Any, sample: Any, feature_names: list[str] | None,
                 options: TorchOptions) -> None:
        torch = require_torch()
        self.model = self.module = model
        self.options = options
        self.atol = fid.ATOL if options.fidelity_atol is None else options.fidelity_atol
        self.rtol = fid.RTOL if options.fidelity_rtol is None else options.fidelity_rtol
        self.sample = st = _sample(sample, feature_names)
        self.dtype, self.dtype_name = input_dtype(model)
        self.x = torch.from_numpy(np.ascontiguousarray(st.table, dtype=self.dtype))
        with eval_mode(model) as was_training:
            try:
                eager_sample = fid.run_eager(model, st.table, self.dtype)
            except PackError:
                raise
            except Exception as exc:
                raise SampleError(
                    f"{type(model).__name__} failed on the sample ({st.table.shape[0]} x "
                    f"{st.table.shape[1]}): {type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:200]}"
                ) from exc
            probes = fid.make_probes(st.table)
            step("checking eval-mode determinism")
            self.determinism = fid.check_determinism(
                model, [p for p in probes if p.name in ("sample", "batch_64")], self.dtype
            )
            self.spec, self.notes = output_spec(
                eager_sample, final_layer(model, self.x[:2]), task=options.task,
                output=options.output, classes=options.classes, threshold=options.threshold,
            )
            self.eager, skipped = fid.eager_on_probes(model, probes, self.dtype)
        self.was_training = was_training
        self.probes = [p for p in probes if p.name in self.eager] if skipped else probes
        if skipped:
            self.notes.append("fidelity probes skipped because the eager model itself failed on "
                              "them: " + "; ".join(skipped))
        if was_training:
            self.notes.insert(0, TRAINING_NOTE)
        self.native: NativeOutput = native_output(self.spec, {OUTPUT_NAME: eager_sample})

    def describe(self, bad: Checks) -> str:
        return fid.describe(bad, self.probes)

    def make(self, ex: Exported, fmt: str, extra_notes: list[str]) -> Export:
        torch = require_torch()
        converters = {"torch": torch.__version__}
        if fmt == "onnx":
            converters |= {"onnxscript": dist_version("onnxscript"), "onnx": dist_version("onnx")}
        export: dict[str, Any] = {
            "format": fmt,
            "method": ex.method,
            "requested_method": self.options.method if fmt == "torchscript" else "dynamo",
            "was_training": self.was_training,
            "exported_in_mode": "eval",
            "export_seconds": round(ex.seconds, 4),
            "input_precision": self.dtype_name,
            **ex.info,
        }
        return Export(
            artifact=ex.artifact,
            inputs=[TensorSpec(name=INPUT_NAME, dtype=self.dtype_name,  # type: ignore[arg-type]
                               shape=[None, len(self.sample.features)],
                               features=self.sample.names)],
            outputs=self.spec,
            framework="torch",
            framework_version=torch.__version__,
            model_type=f"{type(self.model).__module__}.{type(self.model).__qualname__}",
            format=fmt,
            converters=converters,
            export=export,
            notes=[*self.notes, *extra_notes],
        )

    def fidelity(self, exp: Export, job: ExportJob) -> Checks:
        def compare(predictor: Predictor, label: str) -> Checks:
            def run(x: np.ndarray) -> np.ndarray:
                raw = predictor._run_raw({INPUT_NAME: np.ascontiguousarray(x, dtype=self.dtype)})
                return np.asarray(raw[OUTPUT_NAME])

            return fid.compare_probes(self.eager, run, self.probes, label, atol=self.atol,
                                      rtol=self.rtol)

        return self.check_artifact(exp, job, len(self.probes), compare)

    def exported_onnx(self, job: ExportJob) -> Exported:
        return export_onnx(self.model, self.x, job.staging,
                           opset_version=self.options.opset_version,
                           external_data=self.options.external_data)

    def exported_torchscript(self, job: ExportJob, method: str) -> Exported:
        return export_torchscript(self.model, self.x, job.staging, method)

    def check_onnx(self, proto: Any) -> None:
        """One input, one output: nothing to check beyond the common checks."""

    def onnx_advice(self) -> str:
        return (". If the model branches on tensor values, rewrite the branch with torch.where / "
                "torch.cond, or pack it with format='torchscript', method='script'")


__all__ = ["TablePlan", "table_output"]

"""Pack a torch model over N-D tensors (issue #16): the tensor-signature counterpart of
:mod:`.table` (:class:`~packserve.pack.families.torch.family.TorchFamily` chooses).

Also packs a ``torch.export.ExportedProgram`` (and its ``.module()``, whose ``eval()``
raises): the program is exported to ONNX with the dynamic shapes it was exported with, and
its module is the eager reference. See :mod:`packserve.pack.families.torch.tensor` for the sample,
probes and tolerance rules.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from packserve.bundle import Label, OutputSpec, TensorSpec
from packserve.errors import ConfigError, PackError, SampleError
from packserve.pack import parity
from packserve.pack.build import Export
from packserve.pack.families.torch import fidelity as fid
from packserve.pack.families.torch import probes as tp
from packserve.pack.families.torch import tensor as tt
from packserve.pack.families.torch.common import (
    TRAINING_NOTE,
    TorchOptions,
    eval_mode,
    final_layer,
    input_dtype,
)
from packserve.pack.families.torch.export import (
    OUTPUT_NAME,
    Exported,
    export_onnx,
    export_torchscript,
    require_torch,
)
from packserve.pack.families.torch.plan import Checks, Plan
from packserve.pack.family import ExportJob, dist_version
from packserve.pack.outputs import output_spec
from packserve.pack.progress import step
from packserve.pack.signature import SampleTable
from packserve.runtime.base import Predictor


def _value_ranges(ts: tt.TensorSample, found: dict[str, tuple[float, float]],
                  given: dict[str, Any] | None) -> None:
    ranges = dict(found)
    for k, v in (given or {}).items():
        if k not in ts.arrays:
            raise ConfigError(f"value_ranges names unknown input {k!r}; inputs are {ts.names}")
        lo, hi = (float(v[0]), float(v[1]))
        if lo > hi:
            raise ConfigError(f"value_ranges[{k!r}] = [{lo}, {hi}] is empty")
        ranges[k] = (lo, hi)
    for spec in ts.specs:
        r = ranges.get(spec.name)
        if r is None:
            continue
        if spec.dtype not in ("int64", "int32", "uint8"):
            raise ConfigError(f"value_ranges applies to integer inputs; {spec.name!r} is {spec.dtype}")
        arr = ts.arrays[spec.name]
        if arr.size and (arr.min() < r[0] or arr.max() > r[1]):
            raise SampleError(
                f"sample input {spec.name!r} holds values in [{arr.min()}, {arr.max()}], outside "
                f"the range the model accepts [{r[0]:g}, {r[1]:g}]"
                + (" (its nn.Embedding size)" if spec.name in found else "")
            )
        spec.value_range = r


def _output_specs(eager: dict[str, tt.Arrays], names: list[str]) -> list[TensorSpec]:
    specs = []
    for n in names:
        shapes = {tuple(e[n].shape[1:]) for e in eager.values()}
        first = next(iter(eager.values()))[n]
        dims: list[int | None] = [None]
        for i in range(1, first.ndim):
            sizes = {s[i - 1] for s in shapes if len(s) >= i}
            dims.append(sizes.pop() if len(sizes) == 1 else None)
        dtype = first.dtype.name if first.dtype.name in tt._DTYPES else "float32"
        specs.append(TensorSpec(name=n, dtype=dtype, shape=dims))  # type: ignore[arg-type]
    return specs


def _decide_spec(module: Any, ts: tt.TensorSample, eager_sample: tt.Arrays,
                 out_specs: list[TensorSpec], *, task: str | None, output: str | None,
                 classes: list[Label] | None, threshold: float) -> tuple[OutputSpec, list[str]]:
    names = list(eager_sample)
    single = names == [OUTPUT_NAME] and eager_sample[OUTPUT_NAME].ndim <= 2
    if task == "tensor" or (task is None and not single):
        if output is not None or classes is not None:
            raise ConfigError("output= and classes= apply to classifiers, not task='tensor'")
        why = "chosen" if task == "tensor" else (
            f"the model returns {len(names)} outputs" if len(names) > 1
            else f"the output is {eager_sample[names[0]].ndim}-D")
        spec = OutputSpec(task="tensor", postprocess="none", names=names, tensors=out_specs)
        return spec, [f"task='tensor' ({why}): outputs {names} are served by name, as they are"]
    if not single:
        raise ConfigError(
            f"task={task!r} needs one output of shape (n,) or (n, k); the model returns "
            + ", ".join(f"{n} {list(v.shape)}" for n, v in eager_sample.items())
            + ": use task='tensor'"
        )
    try:
        last = final_layer(module, None, call=lambda: tt.call_model(module, ts, ts.arrays))
    except Exception:  # the sample ran already: a hook-only failure just means "unknown"
        last = None
    try:
        spec, notes = output_spec(eager_sample[OUTPUT_NAME], last, task=task, output=output,
                                  classes=classes, threshold=threshold)
    except ConfigError as exc:
        if task is None:
            raise ConfigError(exc.message + ", or task='tensor' to serve the raw output") from exc
        raise
    spec.tensors = out_specs
    return spec, notes


def _require_dynamic_batch(program: Any) -> None:
    """An ExportedProgram keeps the shapes it was exported with: a fixed batch axis would
    serve only that batch size."""
    for node in program.graph.nodes:
        if node.op != "placeholder" or node.name not in program.graph_signature.user_inputs:
            continue
        val = node.meta.get("val")
        shape = getattr(val, "shape", None)
        if shape is not None and len(shape) and isinstance(shape[0], int):
            raise PackError(
                f"the ExportedProgram's input {node.name!r} has a fixed batch axis ({shape[0]}): "
                "it keeps the shapes it was exported with, so the bundle would serve only that "
                "batch size. Export it with dynamic_shapes marking axis 0 as "
                "torch.export.Dim('batch'), or pass the nn.Module itself"
            )


def _determinism(module: Any, ts: tt.TensorSample, probes: list[tt.TensorProbe],
                 eager: dict[str, tt.Arrays]) -> dict[str, Any]:
    worst = 0.0
    for p in probes:
        again = tt.run_eager(module, ts, p.x, f"the probe {p.name!r}")
        for k, ref in eager[p.name].items():
            d = tp.max_abs_diff(ref, again[k])
            if d > fid.DETERMINISM_RTOL * max(1.0, tp.tolerance(ref, 0.0, 1.0)):
                raise PackError(
                    f"{type(module).__name__} is not deterministic in eval mode: two runs on the "
                    f"same input ({p.why}) differ by max |Δ| = {d:.3g} in output {k!r}. Something "
                    "in forward() is random even in eval mode; packserve will not bundle a model "
                    "whose predictions change from call to call"
                )
            worst = max(worst, d)
    return {"check": "determinism", "runs": 2, "inputs": [p.name for p in probes],
            "max_abs_diff": worst, "passed": True}


def _describe(bad: list[dict[str, Any]], probes: list[tt.TensorProbe]) -> str:
    why = {p.name: p.why for p in probes}
    parts = []
    for c in bad[:4]:
        what = c.get("error") or f"max |Δ| = {c['max_abs_diff']:.3g} > {c['tolerance']:.3g}"
        parts.append(f"{c['probe']} ({why.get(c['probe'], '')}, {c['rows']} instances): {what}")
    return "; ".join(parts) + (f"; and {len(bad) - 4} more" if len(bad) > 4 else "")


class TensorPlan(Plan):
    """The eager model on the sample and the fidelity probes, the output spec, and the export
    (ONNX with the sample's dynamic axes, or TorchScript) checked on every probe."""

    def __init__(self, model: Any, sample: Any, options: TorchOptions) -> None:
        torch = require_torch()
        self.options = options
        program = model if isinstance(model, torch.export.ExportedProgram) else None
        if program is not None:
            _require_dynamic_batch(program)
        self.program = program
        self.module = module = program.module() if program is not None else model
        self.atol = atol = tt.DEEP_ATOL if options.fidelity_atol is None else options.fidelity_atol
        self.rtol = rtol = tt.DEEP_RTOL if options.fidelity_rtol is None else options.fidelity_rtol
        dtype, dtype_name = input_dtype(module)
        with eval_mode(module) as was_training:
            self.ts = ts = tt.read_sample(module, sample, float_dtype=dtype,
                                          input_names=options.input_names,
                                          dynamic_axes=options.dynamic_axes)
            _value_ranges(ts, tt.embedding_ranges(module, ts), options.value_ranges)
            probes = tp.make_probes(ts)
            eager: dict[str, tt.Arrays] = {}
            skipped: list[str] = []
            for p in probes:
                try:
                    eager[p.name] = tt.run_eager(module, ts, p.x,
                                                 f"the fidelity probe {p.name!r} ({p.why})")
                except PackError as exc:
                    if p.name == "sample":
                        raise SampleError(exc.message) from exc
                    skipped.append(f"{p.name} ({exc.message.split(':', 1)[0]})")
            self.probes = probes = [p for p in probes if p.name in eager]
            self.eager = eager
            step("checking eval-mode determinism")
            self.determinism = _determinism(module, ts, [p for p in probes if p.name == "sample"
                                                         or p.name.startswith("batch_6")], eager)
            eager_sample = eager["sample"]
            names = list(eager_sample)
            if any(list(e) != names for e in eager.values()):
                raise PackError("the model returns different outputs for different inputs")
            out_specs = _output_specs(eager, names)
            self.spec, notes = _decide_spec(
                module, ts, eager_sample, out_specs, task=options.task, output=options.output,
                classes=options.classes, threshold=options.threshold)
        if skipped:
            notes.append("fidelity probes skipped because the eager model itself failed on them: "
                         + "; ".join(skipped))
        if was_training:
            notes.insert(0, TRAINING_NOTE)
        if program is not None:
            notes.insert(0, "packed from a torch.export.ExportedProgram (exported in the mode "
                            "it was captured in; its dynamic shapes are kept)")
        self.notes = notes
        self.sample = SampleTable(features=[], table=np.empty((0, 0)), frame=None,
                                  tensors={k: v for k, v in probes[0].x.items()})
        self.native = parity.native_output(self.spec, eager_sample)
        self.base: dict[str, Any] = dict(
            inputs=ts.specs, outputs=self.spec, framework="torch",
            framework_version=torch.__version__,
            model_type=f"{type(model).__module__}.{type(model).__qualname__}",
            proba_tol=max(parity.PROBA_TOL, atol), reg_rel_tol=rtol,
        )
        self.export_info = {
            "was_training": was_training, "exported_in_mode": "eval", "input_precision": dtype_name,
            "signature": "tensor", "sample_inputs": {k: list(v.shape) for k, v in ts.arrays.items()},
            "fidelity_tolerance": {
                "atol": atol, "rtol": rtol,
                "basis": "per output and probe: max |artifact - eager| <= atol + rtol x max|eager "
                         "output|; deep float nets sum in a different order in ONNX Runtime / "
                         "TorchScript than in eager torch, so the bound is 1e-4, not 1e-5",
            },
        }

    def describe(self, bad: Checks) -> str:
        return _describe(bad, self.probes)

    def make(self, ex: Exported, fmt: str, extra: list[str]) -> Export:
        converters = {"torch": require_torch().__version__}
        if fmt == "onnx":
            converters |= {"onnxscript": dist_version("onnxscript"), "onnx": dist_version("onnx")}
        info = {"format": fmt, "method": ex.method, "export_seconds": round(ex.seconds, 4),
                **self.export_info, **ex.info}
        return Export(artifact=ex.artifact, format=fmt, converters=converters, export=info,
                      notes=[*self.notes, *extra], **self.base)

    def example(self) -> tuple[tuple[Any, ...] | None, dict[str, Any] | None]:
        torch = require_torch()
        ex = {k: torch.from_numpy(v) for k, v in tp.export_example(self.ts).items()}
        if self.ts.by_keyword:
            return None, ex
        return tuple(ex[n] for n in self.ts.names), None

    def fidelity(self, exp: Export, job: ExportJob) -> Checks:
        def compare(predictor: Predictor, label: str) -> Checks:
            return tp.compare(self.eager, predictor._run_raw, self.probes, label, self.atol,
                              self.rtol)

        return self.check_artifact(exp, job, len(self.probes), compare)

    def exported_onnx(self, job: ExportJob) -> Exported:
        args, kwargs = self.example()
        return export_onnx(self.program or self.module, None, job.staging, args=args,
                           kwargs=kwargs, input_names=self.ts.names,
                           output_names=list(self.eager["sample"]),
                           dynamic_shapes=tp.dynamic_shapes(self.ts),
                           opset_version=self.options.opset_version,
                           external_data=self.options.external_data)

    def check_onnx(self, proto: Any) -> None:
        got = [i.name for i in proto.graph.input]
        if got != self.ts.names:
            raise PackError(f"the exported graph takes inputs {got}, not {self.ts.names}: an "
                            "input the model does not use is dropped by the exporter; remove it")
        for i in proto.graph.input:
            d0 = i.type.tensor_type.shape.dim[0] if i.type.tensor_type.shape.dim else None
            if d0 is not None and d0.HasField("dim_value"):
                raise PackError(
                    f"the export fixed the batch axis of input {i.name!r} to {d0.dim_value}"
                    + (": an ExportedProgram keeps the shapes it was exported with — export it "
                       "with dynamic_shapes marking axis 0 as torch.export.Dim('batch')"
                       if self.program is not None or hasattr(self.module, "_in_spec") else "")
                )

    def onnx_advice(self) -> str:
        return f" (tolerance {self.atol:g} + {self.rtol:g} x max|eager output|)"

    def methods(self) -> list[str]:
        if self.program is not None:
            return ["trace"]  # a GraphModule from torch.export does not script
        return super().methods()

    def exported_torchscript(self, job: ExportJob, method: str) -> Exported:
        args, kwargs = self.example()
        return export_torchscript(self.module, None, job.staging, method, args=args,
                                  kwargs=kwargs)


__all__ = ["TensorPlan"]

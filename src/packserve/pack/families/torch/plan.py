"""The export half of a torch pack, written once for table and tensor models.

A :class:`Plan` is made on the sample (:mod:`.table` or :mod:`.nd`: eager outputs on the
fidelity probes, determinism, output spec); :meth:`Plan.export` then exports in eval mode and
proves the artifact faithful on every probe, loaded with the real runtime:

* ONNX (the dynamo exporter): opsets read, no training-mode / random nodes, every probe under
  ONNX Runtime with graph optimizations disabled (the graph exactly as exported) and enabled;
* TorchScript: ``method='auto'`` traces and falls back to scripting when the trace fails or
  is unfaithful (a trace records only the branch its example took), both recorded.

An unfaithful artifact is refused (:class:`ParityError`), unless ``allow_parity_failure``:
then it is written with the failure in its notes and parity report.
"""

from __future__ import annotations

import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from packserve.errors import PackError, ParityError
from packserve.pack.build import Export, draft_manifest, open_staged
from packserve.pack.families.torch import fidelity as fid
from packserve.pack.families.torch.common import TRACE_ADVICE, TorchOptions, eval_mode, onnx_graph_check
from packserve.pack.families.torch.export import Exported
from packserve.pack.family import ExportJob
from packserve.pack.parity import NativeOutput
from packserve.pack.progress import step
from packserve.pack.signature import SampleTable
from packserve.runtime.base import Predictor

Checks = list[dict[str, Any]]


def clear(staging: Path) -> None:
    """Empty the staging directory for the next TorchScript method (trace -> script)."""
    for p in staging.iterdir():
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


class Plan(ABC):
    """One pack's decisions for one kind of bundle (table or tensor), made on the sample in
    the subclass's constructor, and the export checked against them."""

    sample: SampleTable
    native: NativeOutput
    module: Any  # what runs eagerly (an ExportedProgram's module())
    options: TorchOptions
    determinism: dict[str, Any]

    # --- what a plan supplies -----------------------------------------------------------------

    @abstractmethod
    def make(self, ex: Exported, fmt: str, extra_notes: list[str]) -> Export:
        """Describe the exported artifact (inputs, outputs, versions, export info, notes)."""

    @abstractmethod
    def exported_onnx(self, job: ExportJob) -> Exported:
        """Run the ONNX exporter into ``job.staging``."""

    @abstractmethod
    def exported_torchscript(self, job: ExportJob, method: str) -> Exported:
        """Run ``torch.jit.<method>`` into ``job.staging``."""

    @abstractmethod
    def fidelity(self, exp: Export, job: ExportJob) -> Checks:
        """The staged artifact against the eager model on every probe (:meth:`check_artifact`)."""

    @abstractmethod
    def describe(self, bad: Checks) -> str:
        """The failed fidelity checks, as a user reads them."""

    @abstractmethod
    def check_onnx(self, proto: Any) -> None:
        """Refuse an exported ONNX graph the plan cannot serve."""

    def onnx_advice(self) -> str:
        """Appended to an unfaithful ONNX export's refusal."""
        return ""

    def methods(self) -> list[str]:
        requested = self.options.method
        return ["trace", "script"] if requested == "auto" else [requested]

    # --- the flow -----------------------------------------------------------------------------

    def export(self, job: ExportJob) -> Export:
        """Export in eval mode, check the artifact on every probe; a failed probe is raised
        unless ``job.allow_parity_failure``, then recorded."""
        with eval_mode(self.module):
            if self.options.format == "onnx":
                exp, checks = self.to_onnx(job)
            else:
                exp, checks = self.to_torchscript(job)
        exp.export["fidelity"] = fid.summary(checks)
        bad = fid.failed(checks)
        if bad:
            exp.notes.append("FIDELITY FAILED: " + self.describe(bad))
        exp.checks = [self.determinism, *checks]
        return exp

    def to_onnx(self, job: ExportJob) -> tuple[Export, Checks]:
        import onnx

        step("exporting with torch.onnx.export (dynamo)")
        ex = self.exported_onnx(job)
        exp = self.make(ex, "onnx", [])
        proto = onnx.load(str(job.staging / ex.artifact), load_external_data=False)
        exp.opsets = {d.domain or "": int(d.version) for d in proto.opset_import}
        self.check_onnx(proto)
        graph = onnx_graph_check(job.staging, ex.artifact)
        if not graph["passed"]:
            raise PackError(
                "the exported ONNX graph contains training-mode or random nodes: "
                + ", ".join(graph["found"][:5])
                + " — the bundle would not predict deterministically; no bundle written"
            )
        checks = [graph, *self._timed_fidelity(exp, job)]
        bad = fid.failed(checks)
        if bad and not job.allow_parity_failure:
            raise ParityError("the ONNX export is not faithful to the eager model: "
                              + self.describe(bad) + self.onnx_advice() + "; no bundle written")
        return exp, checks

    def to_torchscript(self, job: ExportJob) -> tuple[Export, Checks]:
        methods = self.methods()
        history: list[str] = []
        tracer_warnings: list[str] = []
        for i, method in enumerate(methods):
            last = i == len(methods) - 1
            clear(job.staging)
            try:
                step(f"exporting with torch.jit.{method}")
                ex = self.exported_torchscript(job, method)
            except PackError as exc:
                if last:
                    raise
                history.append(f"{method} failed ({exc.message}); fell back to script")
                continue
            exp = self.make(ex, "torchscript", [*history])
            tw = list(ex.info.get("tracer_warnings", []))
            if tw:
                exp.notes.append(f"torch.jit.trace emitted {len(tw)} TracerWarning(s): "
                                 + " | ".join(tw[:3]))
            if method == "trace":
                exp.failure_hint = TRACE_ADVICE
            checks = self._timed_fidelity(exp, job)
            bad = fid.failed(checks)
            if not bad:
                if history:
                    exp.export["fallback"] = history
                    exp.export["tracer_warnings"] = tracer_warnings
                return exp, checks
            what = self.describe(bad)
            if not last:
                tracer_warnings = tw
                warn = (f" ({len(tw)} TracerWarning(s), first: {tw[0].split('. ')[0]})" if tw
                        else " (no TracerWarning was emitted)")
                history.append(f"trace was unfaithful on {what}{warn}; fell back to script")
                continue
            if job.allow_parity_failure:
                return exp, checks
            advice = TRACE_ADVICE if method == "trace" else (
                "the scripted model differs from the eager model; check forward() for "
                "Python-only behaviour that TorchScript compiles differently")
            raise ParityError(
                f"the TorchScript {method} of {type(self.module).__name__} is not faithful to "
                f"the eager model: {what}. {advice}; no bundle written")
        raise AssertionError("unreachable")  # pragma: no cover

    def _timed_fidelity(self, exp: Export, job: ExportJob) -> Checks:
        t0 = time.perf_counter()
        checks = self.fidelity(exp, job)
        exp.export["fidelity_seconds"] = round(time.perf_counter() - t0, 4)
        return checks

    def check_artifact(self, exp: Export, job: ExportJob, n_probes: int,
                       compare: Callable[[Predictor, str], Checks]) -> Checks:
        """Load the staged artifact with the real runtime and ``compare`` it on every probe;
        ONNX twice (optimizations disabled: the graph exactly as exported, which the default
        optimizer would hide, e.g. a training-mode Dropout; and all)."""
        step(f"checking fidelity on {n_probes} probes")
        manifest = draft_manifest(exp, self.sample, name=job.name, version="0")
        variants = ["disable", "all"] if exp.format == "onnx" else ["default"]
        checks: Checks = []
        for opt in variants:
            kwargs: dict[str, Any] = {"intra_op_threads": 0}
            if exp.format == "onnx":
                kwargs["optimization"] = opt
            predictor = open_staged(job.staging, manifest, **kwargs)
            label = f"onnxruntime(optimization={opt})" if exp.format == "onnx" else "torch.jit"
            try:
                checks += compare(predictor, label)
            finally:
                predictor.close()
        return checks


__all__ = ["Checks", "Plan", "clear"]

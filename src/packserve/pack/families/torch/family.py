"""The torch family on the common pack flow (:func:`packserve.pack.flow.run`).

torch's own part of a pack: refuse an unknown ``format``/``method`` before any work, read the
sample (a 2-D float sample answered with one rank <= 2 tensor makes a table bundle,
:mod:`.table`; anything else -- another rank, integer inputs, tuples or mappings of inputs,
several outputs, an ``ExportedProgram``, ``task='tensor'`` -- a tensor bundle, :mod:`.nd`),
run the eager model on the sample and the fidelity probes, export, and check the artifact
on every probe. Staging, parity, the manifest and the image-path check are the flow's, as
for every family. The plan chosen for the sample carries the pack's decisions (output spec,
probes, eager outputs) from one step to the next, so :meth:`TorchFamily.resolve` hands out
one instance per pack.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from packserve.errors import ConfigError, PackError
from packserve.pack.build import Export
from packserve.pack.families.torch.common import FORMATS, METHODS, TorchOptions
from packserve.pack.families.torch.export import require_torch
from packserve.pack.families.torch.nd import TensorPlan
from packserve.pack.families.torch.plan import Plan
from packserve.pack.families.torch.table import TablePlan, table_output
from packserve.pack.families.torch.tensor import is_tensor_sample
from packserve.pack.family import ExportJob, Family
from packserve.pack.parity import NativeOutput
from packserve.pack.signature import SampleTable


class TorchFamily(Family):
    title = "torch"
    options = frozenset(f.name for f in fields(TorchOptions))
    step = ""  # announced per phase: determinism, the exporter, fidelity
    missing_values = False  # a tensor has no missing values; NaN in the sample is refused

    def __init__(self) -> None:
        self._options = TorchOptions()
        self._plan: Plan | None = None

    def resolve(self, model: Any) -> tuple[Family, Any]:
        return TorchFamily(), model  # one instance per pack: it carries that pack's plan

    def check(self, model: Any, options: Mapping[str, Any]) -> None:
        torch = require_torch()
        opts = TorchOptions(**options)
        if opts.format not in FORMATS:
            raise ConfigError(f"format must be one of {list(FORMATS)}, got {opts.format!r}")
        if opts.method not in METHODS:
            raise ConfigError(f"method must be one of {list(METHODS)}, got {opts.method!r}")
        if opts.format == "onnx" and opts.method != "auto":
            raise ConfigError(f"method={opts.method!r} applies to format='torchscript'; ONNX "
                              "uses the dynamo exporter")
        if not isinstance(model, torch.nn.Module | torch.export.ExportedProgram):
            raise PackError(f"{type(model).__name__} is not a torch.nn.Module")
        self._options = opts

    def read_sample(self, model: Any, sample: Any, feature_names: list[str] | None) -> SampleTable:
        torch = require_torch()
        o = self._options
        if (isinstance(model, torch.export.ExportedProgram) or o.tensor_only
                or is_tensor_sample(sample, o.task) or not table_output(model, sample)):
            self._plan = TensorPlan(model, sample, o)
        else:
            self._plan = TablePlan(model, sample, feature_names, o)
        return self._plan.sample

    def native(self, model: Any, sample: SampleTable) -> NativeOutput:
        assert self._plan is not None
        return self._plan.native

    def export(self, job: ExportJob) -> Export:
        assert self._plan is not None
        return self._plan.export(job)


FAMILY = TorchFamily()

__all__ = ["FAMILY", "TorchFamily"]

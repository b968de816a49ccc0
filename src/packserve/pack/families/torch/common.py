"""Helpers the table and tensor torch plans share: the options, eval mode, the final layer,
input precision, the graph check."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from packserve.bundle import Label
from packserve.pack.families.torch import fidelity as fid
from packserve.pack.families.torch.export import require_torch

TRACE_ADVICE = (
    "tracing records only the branch its example input took, so a model with data-dependent "
    "control flow (an `if` on tensor values or shapes) is traced wrong; use method='script' "
    "(or method='auto', which falls back to scripting)"
)

FORMATS = ("onnx", "torchscript")
METHODS = ("auto", "trace", "script")


@dataclass(frozen=True)
class TorchOptions:
    """torch's ``pack()`` keywords (see :func:`packserve.pack.pack`)."""

    format: str = "onnx"
    method: str = "auto"
    task: str | None = None
    output: str | None = None
    classes: list[Label] | None = None
    threshold: float = 0.5
    opset_version: int | None = None
    external_data: bool | None = None
    fidelity_atol: float | None = None
    fidelity_rtol: float | None = None
    dynamic_axes: dict[str, Any] | None = None
    value_ranges: dict[str, Any] | None = None
    input_names: list[str] | None = None

    @property
    def tensor_only(self) -> bool:
        """Options that only a tensor bundle takes."""
        return bool(self.dynamic_axes or self.value_ranges or self.input_names)


TRAINING_NOTE = ("model was in training mode: exported in eval mode (Dropout off, BatchNorm "
                 "uses running statistics); the caller's mode was restored")


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[bool]:
    """Put every submodule in eval mode; restore each one's own mode afterwards.

    Yields whether any submodule was in training mode. Restoring per module (not with
    ``model.train(was)``) keeps a caller's deliberately mixed modes intact.
    """
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
    except NotImplementedError:  # torch.export's module: "Calling eval() is not supported yet"
        modes = []
    try:
        yield any(t for _, t in modes)
    finally:
        for m, t in modes:
            m.training = t


def final_layer(model: Any, x: Any, call: Any = None) -> str | None:
    """Class name of the innermost module whose output *is* the model's output, if any."""
    torch = require_torch()
    seen: list[tuple[str, Any]] = []

    def hook(mod: Any, _inp: Any, out: Any) -> None:
        seen.append((type(mod).__name__, out))

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            final = model(x) if call is None else call()
    finally:
        for h in handles:
            h.remove()
    for name, out in seen:  # hooks fire innermost-first
        if out is final:
            return name
    return None


def input_dtype(model: Any) -> tuple[Any, str]:
    torch = require_torch()
    for p in list(model.parameters()) + list(model.buffers()):
        if p.is_floating_point():
            if p.dtype == torch.float64:
                return np.float64, "float64"
            break
    return np.float32, "float32"


def onnx_graph_check(staging: Path, artifact: str) -> dict[str, Any]:
    import onnx

    model = onnx.load(str(staging / artifact), load_external_data=False)
    found = fid.training_nodes(model)
    return {"check": "no_training_nodes", "passed": not found, "found": found,
            "ops": sorted({n.op_type for n in model.graph.node})}


__all__ = ["FORMATS", "METHODS", "TRACE_ADVICE", "TRAINING_NOTE", "TorchOptions", "eval_mode",
           "final_layer",
           "input_dtype", "onnx_graph_check"]

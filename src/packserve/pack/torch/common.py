"""What the table and tensor torch packers share: eval mode, input precision, graph checks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from packserve.pack.torch import fidelity as fid
from packserve.pack.torch.export import require_torch

TRACE_ADVICE = (
    "tracing records only the branch its example input took, so a model with data-dependent "
    "control flow (an `if` on tensor values or shapes) is traced wrong; use method='script' "
    "(or method='auto', which falls back to scripting)"
)

def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


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


__all__ = ["TRACE_ADVICE", "eval_mode", "input_dtype", "onnx_graph_check", "version"]

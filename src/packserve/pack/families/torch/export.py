"""The two torch exporters packserve drives: ``torch.onnx.export(dynamo=True)`` and TorchScript.

Both are noisy (progress lines on stdout, graph dumps on stderr, logger warnings) and both
raise warnings that matter — above all the ``TracerWarning`` that says a trace recorded one
branch of a data-dependent ``if``. Everything they emit is *captured* here and handed back
to the packer, which records it in the manifest instead of letting it scroll past.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import time
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packserve.errors import MissingDependencyError, PackError
from packserve.pack.outputs import OUTPUT_NAME

ONNX_ARTIFACT = "model.onnx"
TORCHSCRIPT_ARTIFACT = "model.pt"
INPUT_NAME = "input"
#: above this many bytes of parameters the ONNX file stores its weights in ``model.onnx.data``
#: (protobuf cannot serialise a message over 2 GiB).
EXTERNAL_DATA_BYTES = 1 << 30
TORCHSCRIPT_DEPRECATION = (
    "TorchScript is deprecated (torch {v} warns on torch.jit.trace/script/load); "
    "prefer format='onnx' for new bundles"
)
_NOISY_LOGGERS = (
    "torch.onnx",
    "torch.export",
    "torch._export",
    "torch._dynamo",
    "torch.fx.experimental.symbolic_shapes",
    "torch._subclasses",
    "onnxscript",
    "onnx_ir",
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def require_torch() -> Any:
    """Import torch or raise :class:`MissingDependencyError` naming the ``torch`` extra."""
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError("torch", "torch") from exc
    return torch


def require_onnxscript() -> None:
    try:
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("onnxscript", "torch") from exc


@dataclass
class Captured:
    """What an exporter said while it ran."""

    warnings: list[dict[str, str]] = field(default_factory=list)
    stdout: str = ""
    stderr: str = ""

    def of_category(self, name: str) -> list[dict[str, str]]:
        return [w for w in self.warnings if w["category"] == name]


@contextlib.contextmanager
def capture() -> Iterator[Captured]:
    """Record warnings, stdout/stderr and torch's logger chatter for the duration."""
    got = Captured()
    out, err = io.StringIO(), io.StringIO()
    levels = {}
    for name in _NOISY_LOGGERS:
        lg = logging.getLogger(name)
        levels[name] = lg.level
        lg.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(record=True) as caught,
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            warnings.simplefilter("always")
            yield got
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        got.stdout, got.stderr = out.getvalue(), err.getvalue()
        seen: set[tuple[str, str, str]] = set()
        for w in caught:
            entry = {
                "category": w.category.__name__,
                "message": str(w.message),
                # basename only: the manifest must not carry the packing host's paths
                "where": f"{os.path.basename(w.filename)}:{w.lineno}",
            }
            key = (entry["category"], entry["message"], entry["where"])
            if key not in seen:
                seen.add(key)
                got.warnings.append(entry)


def _summary(exc: BaseException) -> str:
    """One readable line from the dynamo exporter's multi-page error text."""
    text = _ANSI.sub("", str(exc))
    marker = "## Exception summary"
    if marker in text:
        text = text.split(marker, 1)[1]
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    first = lines[0] if lines else type(exc).__name__
    first = re.sub(r"<class '([\w.]+)'>", lambda m: m.group(1).rsplit(".", 1)[-1], first)
    return first[:300]


def _param_bytes(model: Any) -> int:
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(int(t.numel()) * int(t.element_size()) for t in tensors)


@dataclass
class Exported:
    artifact: str
    method: str
    seconds: float
    captured: Captured
    info: dict[str, Any] = field(default_factory=dict)


def export_onnx(
    model: Any,
    example: Any,
    staging: Path,
    *,
    opset_version: int | None = None,
    external_data: bool | None = None,
    args: tuple[Any, ...] | None = None,
    kwargs: dict[str, Any] | None = None,
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
    dynamic_shapes: Any = None,
) -> Exported:
    """``torch.onnx.export(dynamo=True)`` with a dynamic batch dimension, saved to ``staging``.

    Table models pass one ``example``; tensor models pass ``args`` (positional) or ``kwargs``
    (named inputs), their names and ``dynamic_shapes`` (batch and declared variable axes,
    as ``torch.export.Dim``). An ``ExportedProgram`` keeps the dynamic shapes it was
    exported with (``dynamic_shapes`` must then be ``None``).

    Small models are written as one self-contained file; ``external_data`` (default: only
    when the weights exceed :data:`EXTERNAL_DATA_BYTES`) puts the weights in
    ``model.onnx.data`` next to it — both files are then hashed into the manifest.
    """
    torch = require_torch()
    require_onnxscript()
    try:
        from onnx_ir.traversal import RecursiveGraphIterator
    except ImportError:  # older onnxscript bundles the IR as onnxscript.ir
        from onnxscript.ir.traversal import RecursiveGraphIterator  # type: ignore[no-redef]

    is_program = isinstance(model, torch.export.ExportedProgram)
    use_external = external_data if external_data is not None else (
        _param_bytes(model.module() if is_program else model) >= EXTERNAL_DATA_BYTES
    )
    if args is None and kwargs is None:
        args = (example,)
        dynamic_shapes = ({0: torch.export.Dim("batch")},)
    t0 = time.perf_counter()
    with capture() as cap:
        try:
            program = torch.onnx.export(
                model,
                args if args is not None else (),
                None,
                kwargs=kwargs,
                dynamo=True,
                verbose=False,
                input_names=input_names or [INPUT_NAME],
                output_names=output_names or [OUTPUT_NAME],
                opset_version=opset_version,
                dynamic_shapes=None if is_program else dynamic_shapes,
                optimize=True,
            )
        except Exception as exc:
            raise PackError(
                f"torch.onnx.export (dynamo) could not export {type(model).__name__}: "
                f"{_summary(exc)}. A model with data-dependent control flow (an `if` on tensor "
                "values) cannot become one ONNX graph as written: rewrite the branch with "
                "torch.where / torch.cond, or pack it with format='torchscript', "
                "method='script'",
                detail_for_logs=_ANSI.sub("", str(exc)),
            ) from exc
        # Node metadata holds stack traces with the packing host's absolute paths: drop it.
        for node in RecursiveGraphIterator(program.model.graph):
            node.metadata_props.clear()
        program.save(str(staging / ONNX_ARTIFACT), external_data=use_external)
    seconds = time.perf_counter() - t0
    info = {"external_data": use_external, "exporter": "torch.onnx.export(dynamo=True)"}
    return Exported(ONNX_ARTIFACT, "dynamo", seconds, cap, info)


def minimize_archive(path: Path) -> int:
    """Drop members ``torch.jit.load`` does not need and that leak the packing host's data.

    ``*.debug_pkl`` are pickles of source ranges: the model's Python source text and absolute
    file paths (of the user's code and of the site-packages tree). ``traced_inputs.pkl``
    holds the trace's example inputs, i.e. sample rows. Fewer pickles also means less for
    the load-time scanner to vouch for. Returns how many members were dropped.
    """
    with zipfile.ZipFile(path) as src:
        infos = src.infolist()
        keep = [i for i in infos if not i.filename.endswith((".debug_pkl", "/traced_inputs.pkl"))]
        if len(keep) == len(infos):
            return 0
        tmp = path.with_name(path.name + ".tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as dst:
            for info in keep:
                dst.writestr(info, src.read(info.filename))
    tmp.replace(path)
    return len(infos) - len(keep)


def export_torchscript(
    model: Any, example: Any, staging: Path, method: str, *,
    args: tuple[Any, ...] | None = None, kwargs: dict[str, Any] | None = None,
) -> Exported:
    """``torch.jit.trace`` or ``torch.jit.script`` the (eval-mode) model and save it.

    ``args`` / ``kwargs`` replace the single ``example`` for models with several inputs.
    """
    torch = require_torch()
    t0 = time.perf_counter()
    with capture() as cap:
        try:
            if method == "trace":
                # check_trace would re-run and print its own diff; packserve's fidelity
                # check compares on many more inputs than the one example.
                # _store_inputs=False: otherwise the archive embeds the example (= the
                # caller's sample rows) in traced_inputs.pkl.
                if kwargs is not None:
                    module = torch.jit.trace(model, example_kwarg_inputs=kwargs,
                                             check_trace=False, _store_inputs=False)
                else:
                    module = torch.jit.trace(model, args if args is not None else (example,),
                                             check_trace=False, _store_inputs=False)
            else:
                module = torch.jit.script(model)
            module.save(str(staging / TORCHSCRIPT_ARTIFACT))
            dropped = minimize_archive(staging / TORCHSCRIPT_ARTIFACT)
        except Exception as exc:
            advice = (
                " (scripting compiles the Python source: every forward() must use "
                "TorchScript-supported constructs and type annotations)"
                if method == "script"
                else ""
            )
            raise PackError(
                f"torch.jit.{method} failed for {type(model).__name__}: "
                f"{type(exc).__name__}: {_summary(exc)}{advice}",
                detail_for_logs=str(exc),
            ) from exc
    seconds = time.perf_counter() - t0
    tracer = cap.of_category("TracerWarning")
    info: dict[str, Any] = {
        "exporter": f"torch.jit.{method}",
        "tracer_warnings": [f"{w['where']}: {w['message']}" for w in tracer],
        "deprecation": TORCHSCRIPT_DEPRECATION.format(v=torch.__version__.split("+")[0]),
        "archive_members_dropped": dropped,
    }
    return Exported(TORCHSCRIPT_ARTIFACT, method, seconds, cap, info)


__all__ = [
    "INPUT_NAME",
    "ONNX_ARTIFACT",
    "OUTPUT_NAME",
    "TORCHSCRIPT_ARTIFACT",
    "Captured",
    "Exported",
    "capture",
    "export_onnx",
    "export_torchscript",
    "require_onnxscript",
    "require_torch",
]

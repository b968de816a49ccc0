"""Torch-specific lines for ``packserve inspect`` (reads only the manifest; no torch import).

``inspect`` (cli.py, owned by the pack/inspect section) calls :func:`torch_inspect_rows`
for bundles whose ``framework == "torch"`` and prints each ``(label, value)`` row.
"""

from __future__ import annotations

from typing import Any

from packserve.bundle import Manifest


def _fmt(x: Any) -> str:
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def torch_inspect_rows(manifest: Manifest) -> list[tuple[str, str]]:
    """(label, value) rows: format, export method, eval-mode switch, deprecation, fidelity."""
    if manifest.framework != "torch":
        return []
    ex = manifest.export
    rows: list[tuple[str, str]] = []
    method = ex.get("method", "?")
    exporter = ex.get("exporter", "")
    requested = ex.get("requested_method")
    how = f"{manifest.format} via {exporter or method}"
    if manifest.format == "torchscript" and requested and requested != method:
        how += f" (requested method={requested!r})"
    rows.append(("export", how))
    if ex.get("external_data"):
        extra = sorted(f for f in manifest.files if f != manifest.artifact)
        rows.append(("external data", ", ".join(extra) or "yes"))
    if ex.get("was_training"):
        rows.append(("mode", "model was in TRAINING mode; exported in eval mode (caller's mode restored)"))
    else:
        rows.append(("mode", "exported in eval mode"))
    if ex.get("fallback"):
        rows.append(("fallback", f"{requested} -> {method}: the trace was not faithful (see notes)"))
    warnings = ex.get("tracer_warnings") or []
    if warnings:
        rows.append(("tracer warnings", f"{len(warnings)}: " + " | ".join(map(str, warnings[:3]))))
    if ex.get("deprecation"):
        rows.append(("deprecation", str(ex["deprecation"])))
    fid = ex.get("fidelity")
    if isinstance(fid, dict):
        verdict = "passed" if fid.get("passed") else "FAILED"
        sizes = ", ".join(str(s) for s in fid.get("batch_sizes", []))
        rows.append((
            "fidelity",
            f"{verdict}: max |Δ| {_fmt(fid.get('max_abs_diff'))} vs eager over {fid.get('probes')} "
            f"probes (batch sizes {sizes}; {', '.join(fid.get('runtimes', []))})",
        ))
    for c in manifest.parity.checks:
        if c.get("check") == "determinism":
            rows.append(("determinism", f"2 eager runs agree (max |Δ| {_fmt(c.get('max_abs_diff'))})"))
        elif c.get("check") == "no_training_nodes":
            found = c.get("found") or []
            rows.append(("graph", "no training-mode/random nodes" if not found
                         else "TRAINING NODES: " + ", ".join(found[:3])))
    if "export_seconds" in ex:
        rows.append(("export time", f"{ex['export_seconds']:.2f} s"))
    return rows


__all__ = ["torch_inspect_rows"]

"""Human summaries of a bundle (``packserve inspect``, the end of ``packserve pack``), including
the "format" line: which artifact format the bundle uses, and why.

Kept out of ``cli.py`` so the CLI stays a thin flag parser; uses rich, a core dependency.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from packserve.bundle import NAMED_OUTPUT_TASKS, Manifest, ParityReport

#: The chapter's format decision table as advice: which artifact format a bundle uses, and why
#: (pickle, ONNX, TorchScript, SavedModel, applied per framework); a pack that recorded its
#: own reason in ``export["format_choice"]`` (Keras / TensorFlow) is shown as recorded.
PICKLE = "pickle is never used: loading one runs arbitrary code"
_BY_FRAMEWORK = {
    "sklearn": "ONNX: a tabular model converts faithfully (skl2onnx) and ONNX Runtime serves it "
               f"without scikit-learn; {PICKLE}",
    "xgboost": f"ONNX: tree ensembles convert exactly (onnxmltools); {PICKLE}",
    "lightgbm": f"ONNX: tree ensembles convert exactly (onnxmltools); {PICKLE}",
    "catboost": f"ONNX: CatBoost's own exporter; {PICKLE}",
    "onnx": "ONNX as given: served as is, parity measured against the source framework's "
            "outputs you supplied",
    "keras": "ONNX: a SavedModel or .keras file needs TensorFlow at serve time and .keras/.h5 "
             "configs can carry Lambda bytecode; ONNX is a data-only graph served without "
             "TensorFlow",
    "tensorflow": "ONNX: converted from the SavedModel's graph (no Python from it ran); serving "
                  "it needs no TensorFlow",
}
_TORCH = {
    "onnx": "ONNX (the default): one portable graph, no Python and no torch at serve time",
    "torchscript": "TorchScript (asked for): keeps torch-only ops, needs torch at serve time",
}


def format_advice(m: Manifest) -> str:
    """One line: the format this bundle uses and why (the decision table's row)."""
    recorded = m.export.get("format_choice")
    if isinstance(recorded, str) and recorded:
        return recorded
    if m.framework == "torch":
        return _TORCH.get(m.format, m.format)
    return _BY_FRAMEWORK.get(m.framework, f"{m.format.upper()}: {PICKLE}")


def parity_line(p: ParityReport) -> Text:
    status = Text("PASSED", style="bold green") if p.passed else Text("FAILED", style="bold red")
    if p.max_abs_diff_value is not None:
        detail = f"max |Δvalue| {p.max_abs_diff_value:.3g} ≤ {p.tolerance:.3g} ({p.tolerance_basis})"
        if not p.passed:
            detail = detail.replace("≤", ">")
    else:
        agree = p.label_agreement if p.label_agreement is not None else 0.0
        detail = (
            f"labels {agree:.2%} identical, max |Δprobability| "
            f"{p.max_abs_diff_probability or 0.0:.3g} (tolerance {p.tolerance:g})"
        )
    return Text.assemble(status, f" on {p.rows} rows: {detail}")


def _inputs_table(m: Manifest) -> Table:
    t = Table(title="inputs", title_justify="left", show_edge=False, pad_edge=False)
    t.add_column("tensor")
    t.add_column("dtype")
    t.add_column("shape")
    t.add_column("features")
    for spec in m.inputs:
        more = f", … ({len(spec.features)})" if len(spec.features) > 8 else ""
        shown = ", ".join(spec.features[:8]) + more
        shape = "[" + ", ".join("N" if d is None else str(d) for d in spec.shape) + "]"
        t.add_row(spec.name, spec.dtype, shape, shown)
    return t


def _outputs_line(m: Manifest) -> str:
    out = m.outputs
    if out.task in NAMED_OUTPUT_TASKS:
        return "named outputs: " + ", ".join(
            f"{t.name} {t.dtype}{['N', *t.shape[1:]]}" for t in out.tensors)
    if out.task == "regression":
        return f"values from {out.value_output!r}"
    labels = (f"graph output {out.label_output!r}" if out.label_output
              else "argmax of probabilities")
    return f"probabilities from {out.probability_output!r} ({out.postprocess}); labels: {labels}"


def _missing_line(m: Manifest) -> str:
    """Which features take a missing value (null / NaN), as measured at pack time."""
    allowed = [f.name for f in m.features if f.allow_missing]
    if m.missing_values == "all":
        return "accepted (null / NaN) for every numeric feature"
    if m.missing_values == "some":
        shown = ", ".join(allowed[:8]) + (", ..." if len(allowed) > 8 else "")
        return f"accepted for {len(allowed)} feature(s): {shown}; refused for the others"
    return "refused (the model does not take them)" if m.features else "-"


def _preprocess_line(m: Manifest) -> str:
    """The image pipeline in the order the server runs it (#17)."""
    p = m.preprocess
    if p is None:
        return "-"
    steps = [f"decode (≤ {p.max_bytes / 2**20:.3g} MiB, ≤ {p.max_pixels / 1e6:.3g} M pixels), "
             f"EXIF applied, {p.mode}"]
    filt = p.interpolation + ("" if p.antialias else ", no antialias")
    if isinstance(p.resize, int):
        steps.append(f"resize shorter side to {p.resize} ({filt})")
    elif p.resize is not None:
        steps.append(f"resize to {p.resize[0]}x{p.resize[1]} ({filt})")
    if p.crop is not None:
        steps.append(f"center crop {p.crop[0]}x{p.crop[1]}")
    if p.scale:
        steps.append("/255")
    if p.mean is not None or p.std is not None:
        steps.append(f"normalise mean {p.mean or [0.0]} std {p.std or [1.0]}")
    steps.append(f"{p.layout} {p.dtype} -> input {p.input!r}")
    return " -> ".join(steps)


def _image_parity_line(m: Manifest) -> Text:
    from packserve.pack.images import CHECK, describe

    entry = next((c for c in m.parity.checks if c.get("check") == CHECK), None)
    if entry is None:
        return Text("not measured (packed before this check existed)")
    ok = entry.get("passed") and not entry.get("skipped")
    status = Text("PASSED" if ok else "FAILED" if not entry.get("passed") else "SKIPPED",
                  style="bold green" if ok else "bold red")
    return Text.assemble(status, " " + describe(entry) + (
        f"; reference: {entry['reference']}" if entry.get("reference") else ""))


def _classes(classes: list[Any]) -> str:
    shown = ", ".join(map(str, classes[:20]))
    return f"{len(classes)} classes: {shown}" + (", …" if len(classes) > 20 else "")


def summary(m: Manifest, *, integrity: str | None = None) -> Group:
    """Everything an operator checks before serving a bundle, on one screen."""
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    out = m.outputs
    task = out.task + (f" — {_classes(out.classes)}" if out.classes is not None else "")
    rows: list[tuple[str, Any]] = [
        ("bundle", f"{m.name} {m.version}"),
        ("integrity", Text("verified (sha256 of every file)", style="green") if integrity is None
         else Text(f"FAILED: {integrity}", style="bold red")),
        ("model", f"{m.model_type} ({m.framework} {m.framework_version})"),
        ("task", task),
        ("artifact", f"{m.artifact} ({m.format}), {len(m.files)} file(s), "
                     f"{sum(f.size for f in m.files.values()) / 1024:.1f} KiB"),
        ("format", format_advice(m)),
        ("opsets", ", ".join(f"{d or 'ai.onnx'}={v}" for d, v in sorted(m.opsets.items())) or "-"),
        ("converters", ", ".join(f"{k} {v}" for k, v in sorted(m.converters.items())) or "-"),
        ("precision", str(m.export.get("input_precision", "-"))),
        ("outputs", _outputs_line(m)),
        ("parity", parity_line(m.parity)),
        ("missing values", _missing_line(m)),
        *([("preprocess", _preprocess_line(m)), ("image parity", _image_parity_line(m))]
          if m.preprocess is not None else []),
        ("created", m.created_at),
    ]
    for key, value in rows:
        head.add_row(key, value)
    if m.framework == "torch":  # format/method/eval-mode/deprecation/fidelity (issue #3)
        from packserve.pack.families.torch.info import torch_inspect_rows

        for key, text in torch_inspect_rows(m):
            head.add_row(key, text)
    parts: list[Any] = [head, Text(""), _inputs_table(m)]
    notes = list(m.notes) + [n for n in m.parity.notes if n not in m.notes]
    if notes:
        parts.append(Text("\nnotes:", style="bold"))
        parts.extend(Text(f"  • {n}") for n in notes)
    return Group(*parts)


def print_summary(console: Console, m: Manifest, *, integrity: str | None = None) -> None:
    console.print(summary(m, integrity=integrity))


__all__ = ["format_advice", "parity_line", "print_summary", "summary"]

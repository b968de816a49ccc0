"""Pack-time parity of the whole image path (#17): bytes -> server -> prediction, vs reference.

The artifact's parity on a tensor sample says nothing about decoding, resizing, cropping or
normalising. Here the *runtime's* path (``Predictor.predict_images``: safe decode, the
manifest's preprocessing, the packed artifact) runs on generated images of several sizes,
aspect ratios and modes, and is compared with the reference: the independent Pillow + NumPy
pipeline of :mod:`packserve.pack.images.reference` feeding the *eager* model (torch module,
Keras model; for an ONNX file the user's own file in ONNX Runtime). Top-1 must be identical
(except where the reference's top two are within the tolerance: a tie), probabilities within
the bundle's recorded tolerance. The result is one entry of ``manifest.parity.checks``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from packserve.bundle import MANIFEST_NAME, Manifest
from packserve.pack.images.reference import probe_images, reference_input, within_limits
from packserve.pack.onnx_model import OnnxModel

CHECK = "image_path"


def _roots(model: Any) -> set[str]:
    return {c.__module__.split(".", 1)[0] for c in type(model).__mro__}


class _Skip(Exception):
    pass


def _onnx_runner(path: Path, manifest: Manifest) -> Callable[[np.ndarray], Any]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    feed = manifest.inputs[0].name
    return lambda x: dict(zip(names, sess.run(None, {feed: x}), strict=True))


def _torch_runner(model: Any) -> Callable[[np.ndarray], Any]:
    import torch

    if not isinstance(model, torch.nn.Module):  # ExportedProgram: its mode was fixed at export
        module = model.module()
        return lambda x: module(torch.from_numpy(x))

    def run(x: np.ndarray) -> Any:
        was = model.training
        model.eval()  # the bundle was exported in eval mode; the caller's mode is restored
        try:
            with torch.no_grad():
                return model(torch.from_numpy(x))
        finally:
            model.train(was)

    return run


def eager_runner(
    model: Any, manifest: Manifest, bundle: Path
) -> tuple[str, Callable[[np.ndarray], Any]]:
    """(what the reference model is, a function batch -> the model's raw output)."""
    onnx_file = OnnxModel.of(model)
    if onnx_file is not None:
        return "the ONNX file in ONNX Runtime", _onnx_runner(onnx_file.path, manifest)
    roots = _roots(model)
    if "torch" in roots:
        return "the eager torch model", _torch_runner(model)
    if roots & {"keras", "tf_keras"}:
        return "the Keras model", lambda x: model(x, training=False)
    if manifest.format == "onnx":  # no eager model to call: the artifact, outside packserve
        return (f"the packed artifact in ONNX Runtime (no eager reference for a "
                f"{type(model).__name__})", _onnx_runner(bundle / manifest.artifact, manifest))
    raise _Skip(f"no eager reference for a {type(model).__name__}")




def _numpy(v: Any) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return np.asarray(v, dtype=np.float64)


def _pick(raw: Any, manifest: Manifest, name: str | None) -> np.ndarray:
    """The model output ``name`` from a tensor, a sequence (output order) or a mapping."""
    if isinstance(raw, dict):
        return _numpy(raw[name] if name in raw else next(iter(raw.values())))
    if isinstance(raw, list | tuple):
        names = manifest.outputs.names
        return _numpy(raw[names.index(name)] if name in names else raw[0])
    return _numpy(raw)


def reference_probabilities(raw: Any, manifest: Manifest) -> np.ndarray:
    """The eager output read as the manifest says (softmax of logits, sigmoid, as is)."""
    out = manifest.outputs
    if out.postprocess == "identity":
        return _pick(raw, manifest, out.value_output)
    if out.postprocess == "none":
        first = out.tensors[0].name if out.tensors else None
        return _pick(raw, manifest, first)
    x = _pick(raw, manifest, out.probability_output)
    if out.postprocess == "softmax":
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return np.asarray(e / e.sum(axis=1, keepdims=True))
    if out.postprocess in ("sigmoid_logit", "sigmoid_probability"):
        p = x.reshape(len(x), -1)[:, 0]
        p = 1.0 / (1.0 + np.exp(-p)) if out.postprocess == "sigmoid_logit" else p
        return np.stack([1 - p, p], axis=1)
    return x


def _runtime_values(bundle: Path, manifest: Manifest, blobs: list[bytes]) -> np.ndarray:
    from packserve.runtime import load

    predictor = load(bundle, intra_op_threads=0)
    try:
        pred = predictor.predict_images(blobs)
    finally:
        predictor.close()
    if pred.probabilities is not None and manifest.is_classifier:
        return np.asarray(pred.probabilities, dtype=np.float64)
    if pred.values is not None:
        return np.asarray(pred.values, dtype=np.float64)
    assert pred.outputs is not None
    first = manifest.outputs.tensors[0].name
    return np.asarray(pred.outputs[first], dtype=np.float64)


def check_image_path(bundle: Path, model: Any, manifest: Manifest) -> dict[str, Any]:
    """Run the comparison; the ``parity.checks`` entry (``passed`` says the verdict)."""
    spec = manifest.preprocess
    assert spec is not None
    every = probe_images()
    cases = [(w, b) for w, b in every if within_limits(b, spec)]  # the rest is refused by design
    blobs = [b for _, b in cases]
    tol = float(manifest.parity.tolerance)
    entry: dict[str, Any] = {"check": CHECK, "images": len(cases),
                             "cases": [w for w, _ in cases], "tolerance": tol}
    if len(cases) < len(every):
        entry["beyond_limits"] = [w for w, b in every if (w, b) not in cases]
    if not cases:
        return {**entry, "passed": True, "skipped": "every probe image exceeds max_bytes / "
                "max_pixels"}
    try:
        what, run = eager_runner(model, manifest, bundle)
    except _Skip as exc:
        return {**entry, "passed": True, "skipped": str(exc)}
    entry["reference"] = f"Pillow + NumPy preprocessing (from the spec) -> {what}"
    batch = np.stack([reference_input(b, spec) for b in blobs])
    ref = reference_probabilities(run(batch), manifest).reshape(len(blobs), -1)
    got = _runtime_values(bundle, manifest, blobs).reshape(ref.shape)
    diff = np.abs(ref - got).max(axis=1)
    entry["max_abs_diff"] = float(diff.max())
    bad = [cases[i][0] for i in np.flatnonzero(diff > tol)]
    if manifest.is_classifier:
        top_ref, top_got = ref.argmax(axis=1), got.argmax(axis=1)
        ordered = np.sort(ref, axis=1)
        margin = ordered[:, -1] - ordered[:, -2] if ref.shape[1] > 1 else np.ones(len(ref))
        flips = [i for i in np.flatnonzero(top_ref != top_got) if margin[i] > tol]
        entry["top1_agreement"] = float(np.mean(top_ref == top_got))
        bad += [f"{cases[i][0]} (top-1 differs)" for i in flips if cases[i][0] not in bad]
    entry["failed_cases"] = bad
    entry["passed"] = not bad
    return entry


def describe(entry: dict[str, Any]) -> str:
    """One line: what was compared and how it came out (``inspect`` and errors)."""
    if entry.get("skipped"):
        return f"not measured: {entry['skipped']}"
    top1 = entry.get("top1_agreement")
    skipped = len(entry.get("beyond_limits", []))
    beyond = f", {skipped} more beyond the spec's limits not sent" if skipped else ""
    head = (f"{entry['images']} generated images (sizes, aspect ratios, RGB/L/RGBA/palette, "
            f"JPEG/PNG, EXIF{beyond}): ")
    agree = f"top-1 {top1:.0%} identical, " if top1 is not None else ""
    body = f"{agree}max |Δ| {entry['max_abs_diff']:.3g} (tolerance {entry['tolerance']:.3g})"
    if not entry["passed"]:
        body += "; failed on " + ", ".join(entry["failed_cases"][:4])
    return head + body


def record(bundle: Path, manifest: Manifest, entry: dict[str, Any], *, allowed: bool) -> Manifest:
    """Write ``entry`` into the manifest (a failure only when ``allowed``)."""
    data = manifest.model_dump()
    data["parity"]["checks"] = [c for c in data["parity"]["checks"] if c.get("check") != CHECK]
    data["parity"]["checks"].append(entry)
    if not entry["passed"]:
        msg = "image path parity failed: " + describe(entry)
        data["parity"]["passed"] = False
        data["notes"].append("WRITTEN DESPITE PARITY FAILURE (allow_parity_failure): " + msg)
    assert allowed or entry["passed"]
    updated = Manifest.model_validate(data)
    (bundle / MANIFEST_NAME).write_text(updated.model_dump_json(indent=2) + "\n")
    return updated


__all__ = ["CHECK", "check_image_path", "describe", "eager_runner", "record",
           "reference_probabilities"]

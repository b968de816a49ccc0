"""The chapter's format decision table as advice: which artifact format a bundle uses, and why.

``packserve pack`` and ``packserve inspect`` show one line from here ("format"). The table
(pickle, ONNX, TorchScript, SavedModel) is applied per framework; a pack that recorded its own
reason in ``export["format_choice"]`` (Keras / TensorFlow) is shown as recorded.
"""

from __future__ import annotations

from packserve.bundle import Manifest

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


__all__ = ["format_advice"]

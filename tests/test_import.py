"""`import packserve` must stay light: no runtime, framework or web stack."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ["onnxruntime", "torch", "fastapi", "uvicorn", "sklearn", "xgboost", "lightgbm",
         "catboost", "skl2onnx", "onnx", "pandas", "starlette", "model_signing", "sigstore", "OpenSSL",
         "tensorflow", "keras", "tf2onnx", "h5py", "granian"]


def test_import_pulls_no_heavy_modules() -> None:
    code = (
        "import sys, packserve, packserve.cli\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_cli_imports_rich_only_when_it_prints() -> None:
    """A `packserve serve` process never prints through rich: it must not pay its memory."""
    code = "import sys, packserve.cli\nprint('rich' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

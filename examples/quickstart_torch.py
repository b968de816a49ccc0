"""Pack the chapter's PyTorch FraudDetector (still in training mode!) to ONNX and TorchScript.

    python examples/quickstart_torch.py [OUT_DIR]

packserve switches the module to eval mode for export, checks determinism and fidelity on
several batch sizes and value ranges, and records all of it in the manifest.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

import packserve


class FraudDetector(nn.Module):
    def __init__(self, n_features: int = 15, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_features, hidden), nn.ReLU(), nn.Dropout(0.3),
            nn.Linear(hidden, hidden // 2), nn.ReLU(), nn.Dropout(0.2),
            nn.Linear(hidden // 2, 1), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def main(out_dir: Path) -> None:
    torch.manual_seed(0)
    model = FraudDetector()  # left in training mode on purpose
    sample = np.random.default_rng(0).normal(size=(64, 15)).astype(np.float32)
    for fmt in ("onnx", "torchscript"):
        res = packserve.pack(model, out_dir / fmt, sample=sample, name="fraud-nn", format=fmt, force=True)
        fid = res.manifest.export["fidelity"]
        print(f"{fmt}: passed={res.parity.passed}, {fid['probes']} fidelity probes, "
              f"worst |Δ| {fid['max_abs_diff']:.2e}; exported from training mode: "
              f"{res.manifest.export.get('was_training')}")
        pred = packserve.load(res.path).predict(sample[:3])
        print("  labels", pred.labels.tolist(), "P(fraud)", pred.probabilities[:, 1].round(4).tolist())


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()))

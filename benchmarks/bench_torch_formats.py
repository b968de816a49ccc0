"""ONNX vs TorchScript bundles of the same torch model, measured in one run (issue #3).

    python benchmarks/bench_torch_formats.py [--calls 2000] [--rounds 5]

For each model - the chapter's FraudDetector (15 -> 64 -> 32 -> 1, Dropout, Sigmoid) and a
wider MLP (15 -> 512 -> 512 -> 1) - both formats are packed from *training mode* and the
script prints: pack wall time (export + fidelity probes + parity), the exporter's own time,
artifact size, the worst fidelity |Δ| recorded in the manifest, and CPU latency per call at
batch 1 and 64 for eager torch (the baseline), ONNX Runtime and TorchScript, one thread
each. Contenders are timed in interleaved rounds so drift hits all of them alike; ratios
compare runs of this same invocation. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
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


class WideMLP(nn.Module):
    def __init__(self, n_features: int = 15, hidden: int = 512) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_features, hidden), nn.ReLU(), nn.Dropout(0.1),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def timed_rounds(
    contenders: dict[str, Callable[[], object]], calls: int, rounds: int
) -> dict[str, np.ndarray]:
    """Per-call seconds for each contender, interleaved round by round."""
    for fn in contenders.values():  # warm up
        for _ in range(50):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in contenders}
    per_round = max(1, calls // rounds)
    for _ in range(rounds):
        for name, fn in contenders.items():
            t = time.perf_counter
            for _ in range(per_round):
                t0 = t()
                fn()
                samples[name].append(t() - t0)
    return {k: np.asarray(v) for k, v in samples.items()}


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file() and f.name != "packserve.json")


def bench_model(name: str, model: nn.Module, root: Path, calls: int, rounds: int) -> None:
    rng = np.random.default_rng(0)
    sample = rng.normal(size=(200, 15))
    model.train()  # the classic bug: packserve must export eval behaviour anyway
    bundles: dict[str, Path] = {}
    print(f"\n== {name}: {sum(p.numel() for p in model.parameters()):,} parameters ==")
    print(f"{'format':<12} {'pack s':>8} {'export s':>9} {'artifact KiB':>13} {'fidelity max|Δ|':>16}"
          f"  method")
    for fmt in ("onnx", "torchscript"):
        t0 = time.perf_counter()
        res = packserve.pack(model, root / f"{name}-{fmt}", sample=sample, format=fmt, name=name)
        wall = time.perf_counter() - t0
        bundles[fmt] = res.path
        ex = res.manifest.export
        print(f"{fmt:<12} {wall:8.2f} {ex['export_seconds']:9.3f} {dir_size(res.path) / 1024:13.1f} "
              f"{ex['fidelity']['max_abs_diff']:16.3g}  {ex['method']}")
    assert model.training, "caller's mode must be restored"

    torch.set_num_threads(1)
    onnx_p = packserve.load(bundles["onnx"], intra_op_threads=1)
    ts_p = packserve.load(bundles["torchscript"], intra_op_threads=1)
    model.eval()
    for batch in (1, 64):
        rows = rng.normal(size=(batch, 15))
        feeds = onnx_p.to_feeds(rows)
        xt = torch.from_numpy(feeds["input"])

        def eager(xt: torch.Tensor = xt) -> object:
            with torch.inference_mode():
                return model(xt)

        contenders: dict[str, Callable[[], object]] = {
            "eager torch (baseline)": eager,
            "onnxruntime run": lambda f=feeds: onnx_p._run_raw(f),
            "torchscript run": lambda f=feeds: ts_p._run_raw(f),
            "onnx predict(rows)": lambda r=rows: onnx_p.predict(r),
            "torchscript predict(rows)": lambda r=rows: ts_p.predict(r),
        }
        res_t = timed_rounds(contenders, calls, rounds)
        base = float(np.median(res_t["eager torch (baseline)"]))
        onnx_med = float(np.median(res_t["onnxruntime run"]))
        print(f"\n  batch {batch}: latency per call, 1 thread ({calls} calls, {rounds} interleaved rounds)")
        print(f"  {'contender':<27} {'p50 µs':>9} {'p99 µs':>9} {'vs eager':>9} {'vs onnx':>9}")
        for k, v in res_t.items():
            med = float(np.median(v))
            print(f"  {k:<27} {med * 1e6:9.1f} {np.percentile(v, 99) * 1e6:9.1f} "
                  f"{med / base:9.2f} {med / onnx_med:9.2f}")
    onnx_p.close()
    ts_p.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        bench_model("fraud-detector", FraudDetector(), Path(tmp), args.calls, args.rounds)
        torch.manual_seed(0)
        bench_model("wide-mlp", WideMLP(), Path(tmp), args.calls, args.rounds)


if __name__ == "__main__":
    main()

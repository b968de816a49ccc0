"""Tensor models over HTTP (issue #16): JSON vs V2 binary, batching on vs off, 1 and 16
connections. Not a test: prints a table.

    python benchmarks/bench_tensor.py [--duration 4] [--conns 1,16]

Two models are packed with ``packserve.pack`` (ONNX): a small CNN over float32
``[N, 3, 32, 32]`` (3072 floats per image) and a text classifier over int64 token ids
``[N, 16]`` (Embedding 1000 x 32 -> mean -> 3 logits). For each, a real ``packserve serve``
runs with batching off, then on, and ``wrk`` drives it (closed loop, one instance per
request, 256 distinct bodies) through ``POST /predict`` (JSON nested arrays) and
``POST /v2/models/{name}/infer`` with the input as binary tensor data. A last pair of runs
sends 16 images per request (``/predict/batch`` JSON vs one V2 binary ``[16, 3, 32, 32]``).

The host has 2 cores shared by the server, wrk and whatever else runs: read the ratios
within one run, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import wrkload
from bench_batching import start_server
from wrkload import WrkResult, ensure_wrk


def build(root: Path) -> dict[str, Path]:
    import torch
    from torch import nn

    import packserve

    class SmallCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.f = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                   nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
            self.head = nn.Linear(32, 10)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return self.head(torch.flatten(self.f(image), 1))

    class Text(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(1000, 32)
            self.head = nn.Linear(32, 3)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.head(self.emb(tokens).mean(dim=1))

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cnn = packserve.pack(SmallCNN(), root / "cnn", sample=rng.normal(size=(8, 3, 32, 32)).astype(np.float32),
                         name="cnn", task="multiclass", output="logits", force=True).path
    text = packserve.pack(Text(), root / "text", sample=rng.integers(0, 1000, (16, 16)), name="text",
                          task="multiclass", output="logits", force=True).path
    return {"cnn": cnn, "text": text}


def arrays(name: str, rng: np.random.Generator, n: int) -> np.ndarray:
    if name == "cnn":
        return np.round(rng.standard_normal((n, 3, 32, 32)), 4).astype(np.float32)
    return rng.integers(0, 1000, (n, 16)).astype(np.int64)


def bodies(name: str, per_request: int, count: int = 256) -> tuple[list[bytes], list[bytes], int]:
    """(JSON bodies, V2 binary bodies, V2 JSON-header length) with the same instances."""
    rng = np.random.default_rng(1)
    inp = "image" if name == "cnn" else "tokens"
    dtype = "FP32" if name == "cnn" else "INT64"
    js, v2 = [], []
    header_len = 0
    for _ in range(count):
        x = arrays(name, rng, per_request)
        if per_request == 1:
            js.append(json.dumps({"inputs": x[0].tolist()}, separators=(",", ":")).encode())
        else:
            js.append(json.dumps({"instances": [{"inputs": i.tolist()} for i in x]},
                                 separators=(",", ":")).encode())
        blob = x.tobytes()
        header = json.dumps({"inputs": [{"name": inp, "datatype": dtype, "shape": list(x.shape),
                                         "parameters": {"binary_data_size": len(blob)}}]},
                            separators=(",", ":")).encode()
        header_len = len(header)
        v2.append(header + blob)
    return js, v2, header_len


def lua(dirpath: Path, tag: str, payloads: list[bytes], headers: dict[str, str]) -> Path:
    """A wrk script cycling over ``payloads`` (binary-safe) with ``headers``."""
    return wrkload.script(dirpath / f"{tag}.lua", payloads, headers)


def wrk(exe: str, url: str, script: Path, conns: int, duration: float) -> WrkResult:
    return wrkload.run(url, script, conns, duration, wrk=exe, threads=1 if conns < 16 else 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=4.0)
    ap.add_argument("--conns", default="1,16")
    args = ap.parse_args()
    conns = [int(c) for c in args.conns.split(",")]
    exe = ensure_wrk()
    os.environ.setdefault("PACKSERVE_LOG_LEVEL", "warning")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        models = build(d / "bundles")
        for name, bundle in models.items():
            js, v2, hl = bodies(name, 1)
            js16, v216, hl16 = bodies(name, 16, count=64)
            print(f"{name}: one instance is {np.mean([len(b) for b in js]):.0f} B as JSON, "
                  f"{np.mean([len(b) for b in v2]):.0f} B as V2 binary; 16 instances "
                  f"{np.mean([len(b) for b in js16]):.0f} B vs {np.mean([len(b) for b in v216]):.0f} B",
                  flush=True)
            s_json = lua(d, f"{name}_json", js, {"Content-Type": "application/json"})
            s_v2 = lua(d, f"{name}_v2", v2, {"Content-Type": "application/octet-stream",
                                             "Inference-Header-Content-Length": str(hl)})
            s_json16 = lua(d, f"{name}_json16", js16, {"Content-Type": "application/json"})
            s_v216 = lua(d, f"{name}_v216", v216, {"Content-Type": "application/octet-stream",
                                                   "Inference-Header-Content-Length": str(hl16)})
            for batching in (False, True):
                srv = start_server(bundle, batching, {"PACKSERVE_MAX_BODY_BYTES": str(64 << 20)})
                try:
                    for c in conns:
                        for proto, script, path in (("json", s_json, "/predict"),
                                                    ("v2-binary", s_v2, f"/v2/models/{name}/infer")):
                            r = wrk(exe, srv.url + path, script, c, args.duration)
                            rows.append((name, "on" if batching else "off", c, proto, 1, r))
                            print(rows[-1], flush=True)
                    if not batching:
                        for proto, script, path in (("json", s_json16, "/predict/batch"),
                                                    ("v2-binary", s_v216, f"/v2/models/{name}/infer")):
                            r = wrk(exe, srv.url + path, script, 1, args.duration)
                            rows.append((name, "off", 1, proto, 16, r))
                            print(rows[-1], flush=True)
                finally:
                    srv.stop()
    print("\nmodel  batching conns protocol   inst/req   req/s   inst/s   p99 ms  non-2xx")
    for name, b, c, proto, per, r in rows:
        print(f"{name:6} {b:8} {c:5} {proto:10} {per:8} {r.rps:7.0f} {r.rps * per:8.0f} "
              f"{r.p99_ms:8.2f} {r.non_2xx:7.0f}")


if __name__ == "__main__":
    main()

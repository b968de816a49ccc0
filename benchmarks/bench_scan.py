"""Scanner throughput (MB/s) and peak RSS on a >= 500 MB torch checkpoint (issue #4).

    python benchmarks/bench_scan.py [--size-mb 512] [--repeat 3]

Builds, in a temp dir (deleted at the end), a torch.save state_dict of ``--size-mb`` MB (zip
format) and the same in the legacy format, plus an uncompressed joblib dump with big arrays.
Each measurement runs in a fresh child process so peak RSS (VmHWM) is its own. Baselines
in the same run: ``read`` = streaming the file once in 8 MiB chunks with zlib.crc32 (the floor
for anything that verifies every byte), ``naive`` = what simple scanners do (zipfile.read every
member into memory, then pickletools over the pickles). A last table times the walker on
opcode-heavy pickles against C ``pickle.loads``. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
mode, path = sys.argv[1], sys.argv[2]
from packserve.scan import scan

def peak_mb():  # VmHWM: this process's own peak RSS (ru_maxrss survives exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")

rss0 = peak_mb()
t0 = time.perf_counter()
if mode == "read":
    import zlib
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            crc = zlib.crc32(chunk, crc)
    clean = True
elif mode == "naive":
    import io, pickletools, zipfile
    with zipfile.ZipFile(path) as zf:
        blobs = {n: zf.read(n) for n in zf.namelist()}
    for n, b in blobs.items():
        if n.endswith(".pkl"):
            for _ in pickletools.genops(io.BytesIO(b)):
                pass
    clean = True
else:
    report = scan(path, verify_crc=(mode == "scan"))
    clean = report.clean
dt = time.perf_counter() - t0
print(json.dumps({"s": dt, "rss_mb": peak_mb(), "rss0_mb": rss0, "clean": clean}))
"""


def run(mode: str, path: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(path)], capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(f"{mode} on {path.name} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def build(d: Path, size_mb: int) -> dict[str, Path]:
    import joblib
    import numpy as np
    import torch

    n_tensors = 16
    per = size_mb * (1 << 20) // 4 // n_tensors
    sd = {f"layer{i}.weight": torch.full((per,), float(i)) for i in range(n_tensors)}
    sd["small.bias"] = torch.randn(10)
    paths = {"zip": d / "big.pt", "legacy": d / "big_legacy.pt", "joblib": d / "big.joblib"}
    torch.save(sd, paths["zip"])
    torch.save(sd, paths["legacy"], _use_new_zipfile_serialization=False)
    del sd
    arrays = {f"a{i}": np.full(per // 2, float(i)) for i in range(n_tensors // 4)}
    joblib.dump(arrays, paths["joblib"])
    return paths


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-scan-") as tmp:
        t0 = time.perf_counter()
        paths = build(Path(tmp), args.size_mb)
        print(f"built files in {time.perf_counter() - t0:.1f}s:")
        for k, p in paths.items():
            print(f"  {k:7s} {p.stat().st_size / 1e6:8.1f} MB")
        rows = []
        for kind, path in paths.items():
            size_mb = path.stat().st_size / 1e6
            modes = ["read", "scan", "scan-nocrc"] + (["naive"] if kind == "zip" else [])
            results: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
            for _ in range(args.repeat):  # interleaved so cache/drift hit all modes alike
                for m in modes:
                    results[m].append(run(m, path))
            base = min(r["s"] for r in results["read"])
            for m in modes:
                best = min(r["s"] for r in results[m])
                rss = max(r["rss_mb"] for r in results[m])
                rss0 = max(r["rss0_mb"] for r in results[m])
                clean = all(r["clean"] for r in results[m])
                rows.append((kind, m, size_mb / best, best / base, rss, rss - rss0, clean))
        print()
        print(f"{'file':8s} {'mode':11s} {'MB/s':>9s} {'time/read':>10s} {'peak RSS MB':>12s}"
              f" {'RSS over import':>16s} clean")
        for kind, m, mbs, ratio, rss, extra, clean in rows:
            print(f"{kind:8s} {m:11s} {mbs:9.0f} {ratio:10.2f} {rss:12.1f} {extra:16.1f} {clean}")
        print("\nread = stream + crc32 baseline; naive = zipfile.read all members + pickletools;"
              " scan-nocrc skips the CRC pass over raw tensor members.")
    opcode_heavy()
    print(f"(python {sys.version.split()[0]}, {os.cpu_count()} cpus)")


def opcode_heavy() -> None:
    """Pickles that are mostly opcodes (no big payload to skip): the walker's own speed.

    Baseline: C ``pickle.loads`` of the same (trusted, self-made) bytes in this process.
    """
    import pickle

    import numpy as np
    from sklearn.ensemble import RandomForestClassifier

    from packserve.scan import scan_bytes

    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, 10))
    rf = RandomForestClassifier(n_estimators=200, random_state=0).fit(x, x[:, 0] > 0)
    cases = {
        "RandomForest(200) p5": pickle.dumps(rf, protocol=5),
        "dict of 200k records": pickle.dumps(
            [{"a": i, "b": str(i), "c": (i, float(i))} for i in range(200_000)], protocol=4
        ),
    }
    print(f"\n{'pickle':22s} {'MB':>6s} {'scan MB/s':>10s} {'scan ms':>8s} {'loads ms':>9s} ratio")
    for name, data in cases.items():
        scan_s = min(_timed(lambda d=data: scan_bytes(d)) for _ in range(3))
        load_s = min(_timed(lambda d=data: pickle.loads(d)) for _ in range(3))
        mb = len(data) / 1e6
        print(f"{name:22s} {mb:6.1f} {mb / scan_s:10.1f} {scan_s * 1e3:8.0f} {load_s * 1e3:9.0f}"
              f" {scan_s / load_s:5.1f}x")


def _timed(fn: object) -> float:
    t0 = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()

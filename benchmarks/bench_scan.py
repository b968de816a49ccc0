"""`packserve scan` per file against picklescan (issue #14), and scanner throughput (issue #4).

    python benchmarks/bench_scan.py [cli] [--rounds 7] [--baseline-rev REV]
    python benchmarks/bench_scan.py throughput [--size-mb 512] [--repeat 3]

``cli`` (the default): per-file wall time of the ``packserve scan FILE`` command against
``picklescan --path FILE`` on the same small files (a scikit-learn pickle, a joblib dump, a
torch checkpoint, a malicious pickle, a CSV), in interleaved rounds, with the median ratio;
``python -c pass`` is the interpreter's floor, ``packserve --help`` the typer path.
picklescan is installed in the benchmark's own venv (``~/.cache/packserve-bench/``, created
with ``pip install picklescan`` on first use), never in packserve's dependencies.
``--baseline-rev`` also times packserve's ``src/`` at a git revision (exported to a temp dir)
in the same rounds: start-up before/after a change.

``throughput``: builds, in a temp dir (deleted at the end), a torch.save state_dict of ``--size-mb`` MB (zip
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


def throughput(args: argparse.Namespace) -> None:
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


# --- cli: packserve scan vs picklescan, per file ---------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "packserve-bench"


def picklescan_venv() -> Path:
    """The benchmark's own venv with picklescan (created once; not a packserve dependency)."""
    venv = CACHE / "picklescan-venv"
    exe = venv / "bin" / "picklescan"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "picklescan"],
                       check=True)
    return exe


def small_files(d: Path) -> dict[str, Path]:
    import pickle

    import joblib
    import numpy as np
    import torch
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    rf = RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0).fit(x, x[:, 0] > 0)
    files = {"sklearn.pkl": pickle.dumps(rf, protocol=4),
             "evil.pkl": b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x01\x85R.",
             "table.csv": b"a,b\n" + b"1,2\n" * 1000}
    for name, data in files.items():
        (d / name).write_bytes(data)
    joblib.dump({"x": x, "rf": rf}, d / "model.joblib")
    torch.save(torch.nn.Linear(16, 4).state_dict(), d / "linear.pt")
    return {p.name: p for p in sorted(d.iterdir())}


def export_src(rev: str, d: Path) -> Path:
    """``src/`` of packserve at ``rev`` (git archive), for a before/after comparison."""
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], check=True,
                         capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(d)], input=tar, check=True)
    return d / "src"


def wall(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    return time.perf_counter() - t0, rc


def cli(args: argparse.Namespace) -> None:
    import random
    import statistics

    pscan = picklescan_venv()
    with tempfile.TemporaryDirectory(prefix="bench-scan-cli-") as tmp:
        files = small_files(Path(tmp))
        here = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        tools: dict[str, tuple[list[str], dict[str, str]]] = {
            "packserve": ([sys.executable, "-m", "packserve", "scan"], here),
            "picklescan": ([str(pscan), "--path"], dict(os.environ)),
        }
        if args.baseline_rev:
            before = dict(os.environ, PYTHONPATH=str(export_src(args.baseline_rev, Path(tmp))))
            tools[f"packserve@{args.baseline_rev}"] = ([sys.executable, "-m", "packserve", "scan"], before)
        extra = {"python -c pass": ([sys.executable, "-c", "pass"], here),
                 "packserve --help": ([sys.executable, "-m", "packserve", "--help"], here)}
        if args.baseline_rev:
            extra[f"--help@{args.baseline_rev}"] = ([sys.executable, "-m", "packserve", "--help"], before)
        times: dict[tuple[str, str], list[float]] = {}
        codes: dict[tuple[str, str], int] = {}
        rnd = random.Random(0)
        for _ in range(args.rounds):  # interleaved, order shuffled per file: drift hits all alike
            for fname, path in files.items():
                order = list(tools)
                rnd.shuffle(order)
                for tool in order:
                    cmd, env = tools[tool]
                    dt, rc = wall([*cmd, str(path)], env)
                    times.setdefault((tool, fname), []).append(dt)
                    codes[(tool, fname)] = rc
            for name, (cmd, env) in extra.items():
                times.setdefault((name, ""), []).append(wall(cmd, env)[0])
        med = {k: statistics.median(v) for k, v in times.items()}
        cols = list(tools)
        print(f"median wall time per file, ms ({args.rounds} interleaved rounds; exit code in [])")
        print(f"{'file':14s}" + "".join(f"{c:>22s}" for c in cols) + f"{'packserve/picklescan':>22s}")
        for fname in files:
            cells = "".join(f"{med[(c, fname)] * 1e3:17.0f} [{codes[(c, fname)]}]" for c in cols)
            ratio = med[("packserve", fname)] / med[("picklescan", fname)]
            print(f"{fname:14s}{cells}{ratio:21.2f}x")
        ratios = [med[("packserve", f)] / med[("picklescan", f)] for f in files]
        print(f"median ratio packserve/picklescan: {statistics.median(ratios):.2f}x (target <= 1.5x)")
        for name in extra:
            print(f"{name:24s} {med[(name, '')] * 1e3:7.0f} ms")
        print(f"(python {sys.version.split()[0]}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f})")


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="part")
    c = sub.add_parser("cli", help="packserve scan vs picklescan per file (default)")
    c.add_argument("--rounds", type=int, default=7)
    c.add_argument("--baseline-rev", default=None, help="also time packserve's src/ at this git rev")
    t = sub.add_parser("throughput", help="MB/s and peak RSS on a big checkpoint")
    t.add_argument("--size-mb", type=int, default=512)
    t.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(sys.argv[1:] or ["cli"])
    (throughput if args.part == "throughput" else cli)(args)


if __name__ == "__main__":
    main()

"""Scale-out on one host: ``serve`` (1 process, the baseline) vs ``serve --workers 2`` vs Ray
Serve with 1 and 2 replicas — same model, same load generator (``wrk``), one run.

Starts each shape in turn on the chapter model (XGBoost, 15 features; packed here), warms it
for 1 s, then drives it with ``wrk`` (fixed keep-alive connections, closed loop) for a few
seconds with two payloads:

* ``row``      ``POST /predict``, one row: the HTTP stack dominates (the model takes ~15 us);
* ``batch64``  ``POST /predict/batch``, 64 rows: more compute per request;
* ``heavy``    ``POST /models/slow/predict``, one row of a deliberately slow real ONNX model
  (16 dense 1024x1024 layers, a few ms of compute per request): where compute dominates.

Prints requests/s, p50/p99 and each shape's ratio to plain ``serve`` measured in the same
run. Everything (server processes, Ray's proxy/controller/raylet, wrk) shares this machine's
cores, so read the ratios, not the absolutes, and expect noise on a shared machine.

    python benchmarks/bench_scaleout.py [--seconds 4] [--connections 16] [--no-ray] [--json out.json]

One run on the shared 2-core dev machine (load average ~8 from other jobs, so noisy):

    shape            payload      req/s  x serve   p50 ms   p99 ms
    serve            row           9280     1.00     1.26    11.43
    serve            batch64       9124     1.00     1.24     9.15
    serve            heavy          498     1.00    30.88    64.78
    serve-workers-2  row           9813     1.06     1.41    22.46
    serve-workers-2  batch64      10393     1.14     1.48    17.88
    serve-workers-2  heavy          619     1.24    26.41    86.90
    ray-replicas-1   row            299     0.03    51.85    86.66
    ray-replicas-1   heavy          138     0.28   107.15   173.99
    ray-replicas-2   row            234     0.03    66.49   108.83
    ray-replicas-2   heavy          157     0.32   100.19   181.58

What it says: on 2 cores that also run wrk, a second worker buys little (inference already runs
off the GIL in threads; the gain is parallel JSON/HTTP work). Ray Serve's path (Python HTTP proxy
-> actor call -> replica) costs ~6-7 ms of CPU per request here against ~0.2 ms for plain
uvicorn, so it caps at a few hundred req/s on this host whatever the replica count. It pays off
when per-request compute dwarfs that (big models, GPUs), across several hosts (a proxy per
node), or where Ray already runs and its autoscaling/restarts are wanted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
import wrkload
from harness import start


def _pack_chapter(out: Path) -> tuple[Path, list[list[float]]]:
    """REPO/fraud/1.0.0 (the chapter's XGBoost) + REPO/slow/1 (a compute-heavy ONNX MLP)."""
    from sklearn.datasets import make_classification
    from xgboost import XGBClassifier

    import packserve

    x, y = make_classification(n_samples=5000, n_features=15, n_informative=10, random_state=42)
    model = XGBClassifier(n_estimators=100, max_depth=6, learning_rate=0.1, random_state=42,
                          n_jobs=1).fit(x, y)
    repo = out / "repo"
    packserve.pack(model, repo / "fraud" / "1.0.0", sample=x[:200], name="fraud")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers.models import make_slow_bundle  # the test suite's slow model

    make_slow_bundle(repo / "slow" / "1", width=1024, layers=16)
    return repo, x[:64].tolist()


def _wrk(url: str, body: bytes, seconds: float, conns: int, tmp: Path) -> dict[str, float]:
    r = wrkload.run(url, wrkload.script(tmp / "bench.lua", [body]), conns, seconds)
    return {"rps": r.rps, "non200": r.non_2xx, "errors": r.socket_errors,
            "p50_ms": r.p50_ms, "p99_ms": r.p99_ms}


def _command(shape: str, bundle: Path) -> list[str]:
    """The shape's command line (``{port}``: see :func:`harness.start`)."""
    py = [sys.executable, "-m", "packserve"]
    if shape == "serve":
        return [*py, "serve", str(bundle), "--port", "{port}"]
    if shape == "serve-workers-2":
        return [*py, "serve", str(bundle), "--port", "{port}", "--workers", "2"]
    replicas = shape.rsplit("-", 1)[1]
    return [*py, "deploy", "ray", str(bundle), "--port", "{port}", "--replicas", replicas,
            "--num-cpus", "2", "--max-ongoing-requests", "64", "--max-queued-requests", "-1"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--no-ray", action="store_true", help="only serve vs serve --workers 2")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("this benchmark needs wrk (apt-get install wrk)")
    shapes = ["serve", "serve-workers-2"] + ([] if args.no_ray else ["ray-replicas-1", "ray-replicas-2"])
    results: dict[str, dict[str, dict[str, float]]] = {}
    startup: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-scaleout-") as d:
        tmp = Path(d)
        bundle, rows = _pack_chapter(tmp)
        bodies = {
            "row": ("/models/fraud/predict", json.dumps({"features": rows[0]}).encode()),
            "batch64": ("/models/fraud/predict/batch",
                        json.dumps({"instances": [{"features": r} for r in rows]}).encode()),
            "heavy": ("/models/slow/predict", json.dumps({"features": [0.1, 0.2, 0.3, 0.4]}).encode()),
        }
        for shape in shapes:
            # admit everything: the shapes are compared on what they compute, not on what
            # admission control sheds (a refusal is cheap and would count as a request)
            env = {"PACKSERVE_LOG_LEVEL": "warning", "PACKSERVE_SHUTDOWN_GRACE_S": "0",
                   "PACKSERVE_ADMISSION_BUDGET_MS": "0"}
            t0 = time.monotonic()
            srv = start(shape, _command(shape, bundle), env, timeout=180)
            try:
                startup[shape] = time.monotonic() - t0
                results[shape] = {}
                for name, (path, body) in bodies.items():
                    r = httpx.post(srv.url + path, content=body,
                                   headers={"content-type": "application/json"}, timeout=30)
                    if r.status_code != 200:  # measure answers, never refusals
                        raise SystemExit(f"{shape} {name}: {r.status_code} {r.text[:200]}")
                    _wrk(srv.url + path, body, 1, 4, tmp)  # warm-up
                    results[shape][name] = _wrk(srv.url + path, body, args.seconds, args.connections, tmp)
            finally:
                srv.stop(grace_s=60)  # Ray's shutdown takes its time

    cpus = len(os.sched_getaffinity(0))
    print(f"\nscale-out on {cpus} CPUs, wrk -c{args.connections} {args.seconds:.0f}s per cell, "
          "baseline = plain serve (1 process), same run\n")
    print(f"{'shape':<17}{'payload':<9}{'req/s':>9}{'x serve':>9}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'non200':>8}{'errors':>8}{'ready s':>9}")
    for shape in shapes:
        for name in bodies:
            r, base_r = results[shape][name], results["serve"][name]
            print(f"{shape:<17}{name:<9}{r['rps']:>9.0f}{r['rps'] / base_r['rps']:>9.2f}"
                  f"{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['non200']:>8.0f}{r['errors']:>8.0f}"
                  f"{startup[shape]:>9.1f}")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "startup_s": startup,
                                         "cpus": cpus, "seconds": args.seconds,
                                         "connections": args.connections}, indent=2))


if __name__ == "__main__":
    main()

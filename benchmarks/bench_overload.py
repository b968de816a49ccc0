"""Overload: open loop at 2x the measured capacity, with a client deadline (issue #15).

For each server variant — ``packserve serve`` with default settings, with ``--batching``, and
the same two with admission control off (``--admission-budget-ms 0``: the behaviour before
issue #15, measured in the same run as the baseline) — this script

1. measures capacity with a short closed loop (``packserve bench``, 64 connections) on the
   family's "no admission" server (run first), the offered rate of both of the family's;
2. offers 2x that rate open loop for ``--duration`` s (15) with a 5 s client deadline
   (a request not answered within 5 s counts as a timeout and its connection is dropped);
3. meanwhile probes ``GET /health/ready`` every 50 ms (1 s timeout) and sends a
   ``POST /predict`` every 20 ms from a second client that checks that every 503 carries
   ``Retry-After``;
4. reports: 2xx, 503, timeouts, other errors, accepted p50/p99 (from the scheduled send time),
   health p50/p99/max, 503s without Retry-After, and the server's own admission counters.

The server is pinned to CPU 0 and the generator (this process) to CPU 1 when there are two
CPUs. Variants are interleaved over ``--rounds``. It measures, it never fails on a target.

Usage: python benchmarks/bench_overload.py [--duration 15] [--rounds 1] [--factor 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import Server, build_bundle, start

#: the "no admission" server of a family runs first and its closed-loop capacity sets the
#: offered rate for both (a server that sheds would under-report its own capacity)
VARIANTS: dict[str, list[str]] = {
    "default, no admission": ["--admission-budget-ms", "0"],
    "default": [],
    "batching, no admission": ["--batching", "--admission-budget-ms", "0"],
    "batching": ["--batching"],
}


@dataclass
class Probes:
    health_ms: list[float] = field(default_factory=list)
    health_fail: int = 0
    s503: int = 0
    s503_no_retry_after: int = 0
    stop: threading.Event = field(default_factory=threading.Event)


def probe_health(url: str, p: Probes) -> None:
    with httpx.Client(timeout=1.0) as c:
        while not p.stop.is_set():
            t0 = time.perf_counter()
            try:
                c.get(url + "/health/ready")
                p.health_ms.append((time.perf_counter() - t0) * 1000)
            except httpx.HTTPError:
                p.health_fail += 1
            p.stop.wait(0.05)


def probe_retry_after(url: str, body: bytes, p: Probes) -> None:
    with httpx.Client(timeout=5.0, headers={"content-type": "application/json"}) as c:
        while not p.stop.is_set():
            try:
                r = c.post(url + "/predict", content=body)
                if r.status_code == 503:
                    p.s503 += 1
                    p.s503_no_retry_after += "retry-after" not in r.headers
            except httpx.HTTPError:
                pass
            p.stop.wait(0.02)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def admission_counts(url: str) -> str:
    try:
        text = httpx.get(url + "/metrics", timeout=5).text
    except httpx.HTTPError:
        return "?"
    out = []
    for line in text.splitlines():
        if line.startswith("packserve_admission_rejected_total{"):
            reason = line.split('reason="')[1].split('"')[0]
            out.append(f"{reason}={float(line.split()[-1]):.0f}")
        if line.startswith("packserve_batch_rejected_total{"):
            out.append(f"batcher={float(line.split()[-1]):.0f}")
    return " ".join(out) or "-"


def one_run(
    name: str, srv: Server, bundle: Path, body: bytes, duration: float, factor: float,
    capacity: dict[str, float],
) -> dict[str, object]:
    from packserve.bench import run_bench

    family = name.split(",")[0]
    if family not in capacity or "no admission" in name:
        capacity[family] = run_bench(srv.url, concurrency=64, duration=3.0, bundle=bundle).throughput
    cap = capacity[family]
    rate = factor * cap
    p = Probes()
    threads = [threading.Thread(target=probe_health, args=(srv.url, p), daemon=True),
               threading.Thread(target=probe_retry_after, args=(srv.url, body, p), daemon=True)]
    for t in threads:
        t.start()
    res = run_bench(srv.url, rate=rate, duration=duration, bundle=bundle, timeout=5.0,
                    max_connections=4096).to_dict()
    p.stop.set()
    for t in threads:
        t.join(10)
    errors: dict[str, int] = res["errors"]  # by status ("503") or kind ("timeout", "reset"...)
    lat = res["latency"]["percentiles_ms"]
    row = {
        "variant": name, "capacity": round(cap), "offered": round(rate),
        "ok": res["ok"], "503": errors.get("503", 0), "timeouts": errors.get("timeout", 0),
        "other": sum(v for k, v in errors.items() if k not in ("503", "timeout")),
        "p50_ms": round(lat.get("p50", float("nan")), 1), "p99_ms": round(lat.get("p99", float("nan")), 1),
        "health_p99_ms": round(pct(p.health_ms, 0.99), 1),
        "health_max_ms": round(max(p.health_ms, default=float("nan")), 1),
        "health_fail": p.health_fail,
        "503_checked": p.s503, "503_no_retry_after": p.s503_no_retry_after,
        "server_rejects": admission_counts(srv.url),
        "generator": "kept up" if res["generator"].get("ok", True) else "could NOT keep up",
        "gen_cpu": round(float(res["generator"].get("cpu_util", 0.0)), 2),
        "gen_lag_p50_ms": round(float(res["generator"].get("schedule_lag_p50_ms", 0.0)), 1),
    }
    print(row, flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--factor", type=float, default=2.0)
    ap.add_argument("--variants", default=";".join(VARIANTS), help="names separated by ;")
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--model", choices=("chapter", "slow"), default="chapter",
                    help="slow: a dense 1024x1024x8 ONNX model computed in a thread (~ms per call), "
                    "a rate a generator on a busy host can keep")
    args = ap.parse_args()
    cpus = len(os.sched_getaffinity(0))
    pin_srv = None if args.no_pin or cpus < 2 else "0"
    if pin_srv is not None:
        os.sched_setaffinity(0, {1})  # the generator and probes on the other CPU
    tmp = Path(tempfile.mkdtemp(prefix="bench-overload-"))
    import orjson

    if args.model == "slow":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from helpers.models import make_slow_bundle

        bundle = make_slow_bundle(tmp / "slow", width=1024, layers=8)
        body = orjson.dumps({"features": [0.1, 0.2, 0.3, 0.4]})
    else:
        bundle, rows = build_bundle(tmp)
        body = orjson.dumps({"features": rows[0]})
    py = sys.executable
    rows_out: list[dict[str, object]] = []
    names = [v.strip() for v in args.variants.split(";")]
    print(f"cpus={cpus} pinning={'server cpu0 / generator cpu1' if pin_srv else 'off'} "
          f"duration={args.duration}s factor={args.factor}x model={args.model}", flush=True)
    capacity: dict[str, float] = {}
    for _ in range(args.rounds):
        for name in names:
            srv = start(name, [py, "-m", "packserve", "serve", str(bundle), "--port", "{port}",
                               "--log-level", "warning", *VARIANTS[name]], {}, "/health/ready", pin_srv)
            try:
                rows_out.append(one_run(name, srv, bundle, body, args.duration, args.factor, capacity))
            finally:
                srv.stop()
    print("\n| variant | capacity req/s | offered | 2xx | 503 | timeouts | other errors "
          "| accepted p50 / p99 ms | health p99 / max ms | 503 w/o Retry-After | server rejects |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows_out:
        print(f"| {r['variant']} | {r['capacity']} | {r['offered']} | {r['ok']} | {r['503']} "
              f"| {r['timeouts']} | {r['other']} | {r['p50_ms']} / {r['p99_ms']} "
              f"| {r['health_p99_ms']} / {r['health_max_ms']} "
              f"| {r['503_no_retry_after']} of {r['503_checked']} | {r['server_rejects']} |")
    if len(rows_out) > len(names):
        for name in names:
            p99 = [float(str(r["p99_ms"])) for r in rows_out if r["variant"] == name]
            print(f"{name}: median accepted p99 {statistics.median(p99):.1f} ms over {len(p99)} rounds")


if __name__ == "__main__":
    main()

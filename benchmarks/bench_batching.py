"""Dynamic batching on vs off, measured in one run (issue #6). Not a test: prints a table.

    python benchmarks/bench_batching.py [--duration 4] [--conns 1,16,64] [--skip-overload]

For each model - the chapter's XGBoost (100 trees, depth 6, 15 features) and a heavy ONNX
MLP 15 -> 1024 -> 1024 -> 2 (scikit-learn MLPClassifier, exported by the sklearn packer) -
a real ``packserve serve`` process is started with batching off, then on, and driven by
``wrk`` (closed loop, POST /predict, one row per request) at 1, 16 and 64 connections.
Ratios compare runs of this same invocation on this same machine.

Next to req/s and p99 it prints the batcher's own latency (``packserve_batch_request_seconds``:
submit -> result, and the queue wait), the bound ``max_wait_ms + 2 x`` a 64-row batch's compute
time, and the closed-loop floor ``conns / throughput``: Little's law makes that the *mean*
end-to-end latency whenever ``conns`` requests are always outstanding, whatever the server does.

Then an open-loop overload run against the heavy model, batching on, at 2x the highest
throughput measured above: accepted requests must keep a bounded p99, the excess must get
fast 503s, and nothing else may fail.

The host has 2 cores shared by the server, the load generator and anything else running:
absolute numbers are noisy, ratios within one run are what to read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from batching_load import IN_BATCHER, hist_p99, open_loop, pct, run_wrk, wait_histogram, wrk_script
from harness import ROOT, Server, serve_cmd, start
from wrkload import WrkResult, ensure_wrk

MAX_BATCH_SIZE = 64
MAX_WAIT_MS = 2.0
MAX_QUEUE = 256


# --- models --------------------------------------------------------------------------------------


def build_models(root: Path) -> dict[str, tuple[Path, np.ndarray]]:
    from sklearn.datasets import make_classification
    from sklearn.neural_network import MLPClassifier
    from xgboost import XGBClassifier

    import packserve

    x, y = make_classification(n_samples=5000, n_features=15, n_informative=10, random_state=42)
    xgb = XGBClassifier(
        n_estimators=100, max_depth=6, learning_rate=0.1, random_state=42, n_jobs=1,
        eval_metric="logloss",
    ).fit(x, y)
    # a few epochs are enough: the benchmark measures cost per call, not accuracy
    mlp = MLPClassifier(hidden_layer_sizes=(1024, 1024), max_iter=3, random_state=0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp.fit(x[:2000], y[:2000])
    out = {}
    for name, model in (("chapter-xgb", xgb), ("mlp-1024x2", mlp)):
        res = packserve.pack(model, root / name, sample=x[:200], name=name)
        out[name] = (res.path, x)
    return out


def build_deep(root: Path) -> Path:
    """A model the server cannot keep up with even batched (for the overload run): 15 -> 1024,
    then 24 tanh layers sharing one 1024x1024 matrix (4 MB file, ~25 M MACs a row): the test
    suite's slow model."""
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers.models import make_slow_bundle

    return make_slow_bundle(root / "deep", width=1024, layers=24, name="deep", version="1",
                            features=15)


def compute_time(bundle: Path, x: np.ndarray, rows: int) -> float:
    """Median seconds of one predictor.run on ``rows`` rows (in this process, same host)."""
    import packserve

    p = packserve.load(bundle)
    feeds = p.to_feeds(x[:rows])
    p.run(feeds)
    times = []
    for _ in range(30):
        t0 = time.perf_counter()
        p.run(feeds)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


# --- server --------------------------------------------------------------------------------------


def start_server(bundle: Path, batching: bool, extra: dict[str, str] | None = None) -> Server:
    """``packserve serve`` in a subprocess, configured through PACKSERVE_* variables."""
    env = {
        "PACKSERVE_MODEL_PATH": str(bundle),
        "PACKSERVE_BATCHING": "true" if batching else "false",
        "PACKSERVE_MAX_BATCH_SIZE": str(MAX_BATCH_SIZE),
        "PACKSERVE_MAX_WAIT_MS": str(MAX_WAIT_MS),
        "PACKSERVE_MAX_QUEUE": str(MAX_QUEUE),
        **(extra or {}),
    }
    return start("batching on" if batching else "batching off", serve_cmd(), env, timeout=60)


# --- main ---------------------------------------------------------------------------------------


@dataclass
class Config:
    label: str
    batching: bool
    extra: dict[str, str] = field(default_factory=dict)


def run_configs(wrk: str, bundle: Path, script: Path, conns: list[int], duration: float,
                configs: list[Config], repeats: int,
                ) -> dict[tuple[str, int], tuple[WrkResult, float, float]]:
    """All configurations' servers up at once; wrk alternates between them (c=1 off, c=1 on,
    ..., repeated), so a burst of load from elsewhere on the host hits every configuration
    alike. Per (config, conns): the median-throughput run, the batcher's queue-wait p99 and
    its submit -> result p99 (upper bounds of the histogram buckets holding them)."""
    servers: list[Server] = []
    runs: dict[tuple[str, int], list[tuple[WrkResult, float, float]]] = {}
    try:
        for cfg in configs:  # one by one: a server that fails to start leaves the others stoppable
            servers.append(start_server(bundle, cfg.batching, cfg.extra))
        for server in servers:
            run_wrk(wrk, server.url, script, 16, 1)  # warm-up, not reported
        for c in conns:
            for _ in range(repeats):
                for cfg, server in zip(configs, servers, strict=True):
                    text = server.metrics()
                    before = wait_histogram(text), wait_histogram(text, IN_BATCHER)
                    r = run_wrk(wrk, server.url, script, c, duration)
                    text = server.metrics()
                    after = wait_histogram(text), wait_histogram(text, IN_BATCHER)
                    nan = float("nan")
                    qp99 = hist_p99(before[0], after[0]) if cfg.batching else nan
                    bp99 = hist_p99(before[1], after[1]) if cfg.batching else nan
                    runs.setdefault((cfg.label, c), []).append((r, qp99, bp99))
                    print(f"  {cfg.label:<22} c={c:<3} {r.rps:8.0f} req/s  p50 {r.p50_ms:7.2f} ms  "
                          f"p99 {r.p99_ms:7.2f} ms  queue-wait p99 {qp99:6.2f} ms  "
                          f"in-batcher p99 {bp99:6.2f} ms  "
                          f"non-2xx {r.non_2xx}  sock-err {r.socket_errors}", flush=True)
    finally:
        for server in servers:
            server.stop()
    return {k: sorted(v, key=lambda t: t[0].rps)[len(v) // 2] for k, v in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per wrk run")
    ap.add_argument("--conns", default="1,16,64")
    ap.add_argument("--skip-overload", action="store_true")
    ap.add_argument("--models", default="chapter-xgb,mlp-1024x2")
    ap.add_argument("--repeats", type=int, default=2, help="runs per (config, conns); median")
    args = ap.parse_args()
    conns = [int(c) for c in args.conns.split(",")]
    wrk = ensure_wrk()
    tmp = Path(tempfile.mkdtemp(prefix="bench-batching-"))
    try:
        print(f"building models in {tmp} ...", flush=True)
        models = build_models(tmp)
        rows = next(iter(models.values()))[1]
        script = wrk_script(tmp, rows)
        table = []
        for name in args.models.split(","):
            bundle, x = models[name]
            big = compute_time(bundle, x, MAX_BATCH_SIZE)
            one = compute_time(bundle, x, 1)
            print(f"{name}: compute 1 row {one * 1e3:.3f} ms, {MAX_BATCH_SIZE} rows "
                  f"{big * 1e3:.3f} ms", flush=True)
            configs = [Config("batching off", False), Config("batching on", True)]
            if one < 0.00025:
                # the chapter's baseline paid a thread hop per request (run_in_executor / sync
                # def); packserve's unbatched path runs a model this cheap inline instead
                configs.append(Config("off, thread per call", False,
                                      {"PACKSERVE_INLINE_MAX_MS": "0"}))
            res = run_configs(wrk, bundle, script, conns, args.duration, configs, args.repeats)
            for c in conns:
                hop = res.get(("off, thread per call", c))
                on = res[("batching on", c)]
                table.append((name, c, res[("batching off", c)][0], on[0], on[1], on[2],
                              hop[0] if hop else None, MAX_WAIT_MS + 2 * big * 1e3))
        print("\n| model | conns | off req/s | on req/s | on/off | p99 off ms | p99 on ms | "
              "floor ms (conns / on req/s) | batcher queue-wait p99 ms | in-batcher p99 ms | "
              "bound ms (max_wait + 2x batch compute) | on / off-with-thread-hop |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for name, c, o, n, qp99, bp99, h, bound in table:
            hop_ratio = f"{n.rps / h.rps:.2f}x ({h.rps:.0f} req/s)" if h else "-"
            print(f"| {name} | {c} | {o.rps:.0f} | {n.rps:.0f} | {n.rps / o.rps:.2f}x | "
                  f"{o.p99_ms:.2f} | {n.p99_ms:.2f} | {1000 * c / n.rps:.2f} | {qp99:.2f} | "
                  f"{bp99:.2f} {'<=' if bp99 <= bound else '>'} | {bound:.2f} | {hop_ratio} |")
        print("\nfloor: with `conns` requests always outstanding, the mean end-to-end latency is "
              "conns / throughput (Little's law), whatever the batcher does; in-batcher p99 is "
              "the batcher's own share (submit -> result), the part the bound is about.")
        if not args.skip_overload:
            overload(wrk, tmp, script, rows, args.duration)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def overload(wrk: str, tmp: Path, script: Path, x: np.ndarray, duration: float) -> None:
    """Open loop at 2x the most the server sustains on a model that is the bottleneck."""
    bundle = build_deep(tmp)
    print(f"\noverload model: deep MLP, compute 1 row {compute_time(bundle, x, 1) * 1e3:.2f} ms, "
          f"{MAX_BATCH_SIZE} rows {compute_time(bundle, x, MAX_BATCH_SIZE) * 1e3:.2f} ms")
    sustained = run_configs(wrk, bundle, script, [64], duration,
                            [Config("batching on (closed)", True)], 1)
    best = sustained[("batching on (closed)", 64)][0].rps
    rate = 2 * best
    bodies = [json.dumps({"features": [float(v) for v in r]}).encode() for r in x[:256]]
    # max_queue sized to the model: ~50 ms of work at the measured rate (at least one batch)
    queue = max(MAX_BATCH_SIZE, int(best * 0.05))
    server = start_server(bundle, True, {"PACKSERVE_MAX_QUEUE": str(queue)})
    try:
        res = asyncio.run(open_loop(server.url, bodies, rate, duration))
    finally:
        server.stop()
    other = {k: v for k, v in res.statuses.items() if k not in ("200", "503")}
    print(f"open loop at {rate:.0f} req/s (2x the closed-loop {best:.0f}) for {duration:g}s, "
          f"max_queue={queue}:")
    print(f"  sent {res.sent}  statuses {res.statuses}")
    print(f"  accepted: {len(res.ok_lat) / duration:.0f} req/s, p50 {pct(res.ok_lat, 50):.1f} ms, "
          f"p99 {pct(res.ok_lat, 99):.1f} ms, max {pct(res.ok_lat, 100):.1f} ms")
    print(f"  503: p50 {pct(res.rej_lat, 50):.1f} ms, p99 {pct(res.rej_lat, 99):.1f} ms; "
          f"Retry-After seen: {res.retry_after_seen}")
    print(f"  generator schedule lag p99 {pct(res.schedule_lag, 99):.1f} ms "
          "(large = the generator, not the server, was short of CPU)")
    print(f"  other errors: {sum(other.values())} {other or ''}")


if __name__ == "__main__":
    main()

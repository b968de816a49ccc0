"""Throughput / latency / memory of ``packserve serve`` against two baselines, in one run.

Servers, all on the same uvicorn (uvloop + httptools, one process, no access log), serving the
chapter's XGBoost model (100 trees, depth 6, 15 features) packed as one bundle:

  (a) packserve    ``packserve serve BUNDLE``
  (b) reference    the chapter's FastAPI service (``serve_apps/reference_app.py``)
  (c) bare ASGI    reads the body, returns a fixed JSON (``serve_apps/bare_asgi.py``)
  (d) minimal      the least work any server of this model must do: parse, one ONNX Runtime
                   call, encode, nothing else (``serve_apps/minimal_app.py``). Unsafe, not a
                   product: it measures the *ceiling* the targets can be compared against.
  and, unless ``--no-batching-variant``, (a') ``packserve serve BUNDLE --batching``.
  With ``--engine both`` (issue #15), (a), (a') and (d) also run on granian in the same run,
  interleaved with the rest: ``packserve serve --server granian`` and the minimal app under
  ``granian --interface asgi --loop uvloop --http 1`` (one worker; its peak RSS is the
  manager's, not the worker's). The table then shows granian/uvicorn for both and
  packserve/minimal on each engine.

Load: ``wrk`` (installed with ``apt-get install -y wrk`` if missing) with a Lua script for
the POST body, at 1, 16 and 64 connections on ``/predict`` (one row) and at 64 connections
on ``/predict/batch`` with 20 instances. Servers are pinned to CPU 0 and wrk to CPU 1 when
the machine has two or more CPUs, and measurements of the servers are interleaved so
that noise from other processes hits them alike. Prints req/s, p50/p99, the server's CPU per
request (its process tree's user + system time over the run: robust where req/s is not, on a
shared host), peak RSS (VmHWM) and the ratios the issue sets as targets:

  /predict @64: packserve >= 0.6x bare ASGI (~6x reference), p99 <= 5 ms
  /predict/batch (20) @64: packserve >= 6x reference;  peak RSS <= 1.1x reference

Usage: python benchmarks/bench_serve.py [--duration 5] [--rounds 3] [--connections 1,16,64] [--no-pin]
       [--engine uvicorn|both] [--baseline-src DIR]
Each setting runs ``--rounds`` times as a, b, c, d back to back; the table shows medians and the
ratios are medians of the per-round ratios (adjacent runs share the machine's noise).
This is a measurement, not a test: it never fails on a missed target, it reports it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import httpx
import wrkload
from harness import Server, serve_cmd, start


def build_bundle(workdir: Path) -> tuple[Path, list[list[float]]]:
    from sklearn.datasets import make_classification
    from xgboost import XGBClassifier

    import packserve

    x, y = make_classification(n_samples=5000, n_features=15, n_informative=10, random_state=42)
    model = XGBClassifier(n_estimators=100, max_depth=6, learning_rate=0.1, random_state=42,
                          eval_metric="logloss", n_jobs=1).fit(x, y)
    res = packserve.pack(model, workdir / "fraud", sample=x[:200], name="fraud")
    return res.path, x[4000:4020].tolist()


def run_wrk(wrk: str, url: str, body: str, conns: int, duration: float, pin: str | None,
            tmp: Path) -> dict[str, float]:
    """One wrk run of ``body`` (a 10 s request timeout) as a row of the report."""
    lua = wrkload.script(tmp / f"post-{abs(hash(body))}.lua", [body])
    r = wrkload.run(url, lua, conns, duration, wrk=wrk, pin=pin, timeout_s=10)
    return {"rps": r.rps, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms,
            "errors": r.socket_errors + r.non_2xx, "non2xx": r.non_2xx,
            "socket_errors": r.socket_errors, "requests": r.requests}


Row = dict[str, float]
Key = tuple[str, str, int]  # (server or ratio name, path, connections)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--connections", default="1,16,64")
    ap.add_argument("--rounds", type=int, default=3, help="adjacent a/b/c rounds per setting")
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--no-batching-variant", dest="batching_variant", action="store_false",
                    help="skip the 'packserve --batching' server (issue #6's dynamic batching)")
    ap.add_argument("--engine", choices=("uvicorn", "both"), default="uvicorn",
                    help="both: also packserve (--server granian) and the minimal app on granian")
    ap.add_argument("--baseline-src", type=Path, default=None, metavar="DIR",
                    help="also serve packserve from DIR/src (e.g. a worktree of main) as "
                         "'packserve@base', interleaved: before vs after in the same run")
    return ap.parse_args()


def start_servers(bundle: Path, batching_variant: bool, pin: str | None,
                  granian: bool = False, baseline_src: Path | None = None) -> list[Server]:
    """(a) packserve, (a') with --batching, (b) reference, (c) bare ASGI, (d) minimal; with
    ``granian``, (a), (a') and (d) again on granian (``NAME@granian``); with ``baseline_src``,
    (a) from that source tree (``packserve@base``)."""
    py = sys.executable
    uv = [py, "-m", "uvicorn", "--host", "127.0.0.1", "--port", "{port}", "--loop", "uvloop",
          "--http", "httptools", "--no-access-log", "--log-level", "warning"]
    ps = serve_cmd(bundle)
    model_env = {"REFERENCE_MODEL": str(bundle / "model.onnx")}
    # Appended one by one so that a server that fails to start leaves the others stoppable.
    servers: list[Server] = []
    servers.append(start("packserve", ps, {}, "/health/ready", pin))
    if baseline_src is not None:
        servers.append(start("packserve@base", ps, {"PYTHONPATH": str(baseline_src.resolve() / "src")},
                             "/health/ready", pin))
    if batching_variant:
        servers.append(start("packserve+batching", [*ps, "--batching"], {}, "/health/ready", pin))
    servers.append(start("reference", [*uv, "benchmarks.serve_apps.reference_app:app"],
                         model_env, "/health", pin))
    servers.append(start("bare-asgi", [*uv, "benchmarks.serve_apps.bare_asgi:app"], {}, "/", pin))
    servers.append(start("minimal", [*uv, "benchmarks.serve_apps.minimal_app:app"],
                         model_env, "/", pin))
    if granian:
        gr = [py, "-m", "granian", "--interface", "asgi", "--loop", "uvloop", "--http", "1",
              "--no-ws", "--host", "127.0.0.1", "--port", "{port}", "--log-level", "warning"]
        servers.append(start("packserve@granian", [*ps, "--server", "granian"], {},
                             "/health/ready", pin))
        if batching_variant:
            servers.append(start("packserve+batching@granian",
                                 [*ps, "--server", "granian", "--batching"], {}, "/health/ready", pin))
        servers.append(start("minimal@granian", [*gr, "benchmarks.serve_apps.minimal_app:app"],
                             model_env, "/", pin))
    return servers


def check_servers(servers: list[Server], single: str, batch: str) -> None:
    """Every server answers both shapes correctly before it is measured."""
    for s in servers:
        for path, body in (("/predict", single), ("/predict/batch", batch)):
            r = httpx.post(s.url + path, content=body, headers={"content-type": "application/json"})
            assert r.status_code == 200, (s.name, path, r.status_code, r.text[:200])


def per_round(rounds: dict[str, list[Row]], a: str, b: str) -> list[float]:
    return [x["rps"] / y["rps"] if y["rps"] else math.nan
            for x, y in zip(rounds[a], rounds[b], strict=True)]


def per_round_cpu(rounds: dict[str, list[Row]], a: str, b: str) -> list[float]:
    """``b``'s CPU per request over ``a``'s: the throughput ratio a CPU-bound pair would show
    on a quiet machine. Robust where req/s is not: on a shared host each server gets whatever
    share of the CPU the scheduler leaves it (and a server with two busy threads, such as
    ``--batching``'s, gets two shares)."""
    return [y["cpu_us"] / x["cpu_us"] if x["cpu_us"] else math.nan
            for x, y in zip(rounds[a], rounds[b], strict=True)]


def measure_setting(servers: list[Server], wrk: str, path: str, body: str, c: int,
                    args: argparse.Namespace, pin: str | None, tmp: Path,
                    results: dict[Key, Row], ratios: dict[Key, list[float]]) -> None:
    """``--rounds`` adjacent a, b, c, d runs of one setting; medians and per-round ratios."""
    rounds: dict[str, list[Row]] = {s.name: [] for s in servers}
    for _ in range(args.rounds):  # a, b, c, d back to back: adjacent runs share the noise
        for s in servers:
            cpu0 = s.cpu_s()
            res = run_wrk(wrk, s.url + path, body, c, args.duration, pin, tmp)
            res["cpu_us"] = (s.cpu_s() - cpu0) / max(1.0, res["requests"]) * 1e6
            rounds[s.name].append(res)
            print(f"  {s.name:<10} {path:<15} c={c:<3} {res['rps']:>9.0f} req/s  "
                  f"p50 {res['p50_ms']:6.2f} ms  p99 {res['p99_ms']:6.2f} ms  "
                  f"cpu {res['cpu_us']:6.1f} us/req  errors {int(res['errors'])}", flush=True)
    for name, runs in rounds.items():
        results[(name, path, c)] = {
            k: statistics.median(r[k] for r in runs) for k in runs[0]
        } | {"errors": sum(r["errors"] for r in runs)}
    ratios[("minimal-vs-bare", path, c)] = per_round(rounds, "minimal", "bare-asgi")
    ratios[("minimal-vs-reference", path, c)] = per_round(rounds, "minimal", "reference")
    ratios[("cpu:minimal", path, c)] = per_round_cpu(rounds, "packserve", "minimal")
    if "packserve+batching" in rounds:
        ratios[("cpu:minimal/b", path, c)] = per_round_cpu(rounds, "packserve+batching", "minimal")
    for other in ("reference", "bare-asgi", "minimal"):
        ratios[(other, path, c)] = per_round(rounds, "packserve", other)
        if "packserve+batching" in rounds:
            ratios[(other + "/b", path, c)] = per_round(rounds, "packserve+batching", other)
    if "packserve@base" in rounds:  # --baseline-src
        ratios[("cpu:base", path, c)] = per_round_cpu(rounds, "packserve", "packserve@base")
        ratios[("cpu:minimal/base", path, c)] = per_round_cpu(rounds, "packserve@base", "minimal")
    for name in ("packserve", "packserve+batching", "minimal"):  # --engine both
        if name + "@granian" in rounds:
            ratios[(name + " granian/uvicorn", path, c)] = per_round(rounds, name + "@granian", name)
            if name != "minimal":
                ratios[(name + "@granian/minimal", path, c)] = per_round(
                    rounds, name + "@granian", "minimal@granian")


def report(results: dict[Key, Row], ratios: dict[Key, list[float]], rss: dict[str, float],
           conns: list[int], n_rounds: int) -> None:
    print("\n| server | endpoint | conns | req/s | p50 ms | p99 ms | CPU us/req | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for (name, path, c), r in results.items():
        print(f"| {name} | {path} | {c} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
              f"| {r['cpu_us']:.0f} | {int(r['errors'])} |")
    print("\npeak RSS (VmHWM): " + ", ".join(f"{k} {v:.1f} MiB" for k, v in rss.items()))

    def ratio(other: str, path: str, c: int) -> str:
        rs = [r for r in ratios[(other, path, c)] if r == r and r > 0]  # a round wrk starved: out
        if not rs:
            return "n/a"
        return f"{statistics.median(rs):.2f}x" + (f" [{min(rs):.2f}-{max(rs):.2f}]" if len(rs) > 1 else "")

    print(f"\nratios (same run; median of {n_rounds} adjacent rounds [min-max]):")
    for c in conns:
        print(f"  /predict c={c:<3} packserve/bare {ratio('bare-asgi', '/predict', c)}   "
              f"packserve/reference {ratio('reference', '/predict', c)}")
    print(f"  /predict/batch(20) c=64 packserve/reference {ratio('reference', '/predict/batch', 64)}")
    if ("bare-asgi/b", "/predict", conns[0]) in ratios:
        for c in conns:
            print(f"  --batching /predict c={c:<3} packserve/bare {ratio('bare-asgi/b', '/predict', c)}   "
                  f"packserve/reference {ratio('reference/b', '/predict', c)}")
        print(f"  --batching /predict/batch(20) c=64 packserve/reference "
              f"{ratio('reference/b', '/predict/batch', 64)}")
    if 64 in conns:
        a64 = results[("packserve", "/predict", 64)]
        print(f"  target /predict@64 >= 0.6x bare: {ratio('bare-asgi', '/predict', 64)}  "
              f"p99 {a64['p99_ms']:.2f} ms (target <= 5 ms)")
    print(f"  target /predict/batch(20)@64 >= 6x reference: {ratio('reference', '/predict/batch', 64)}")
    print("\nthe ceiling: (d) minimal = parse + one ONNX Runtime call + encode, nothing else")
    for c in conns:
        print(f"  /predict c={c:<3} minimal/bare {ratio('minimal-vs-bare', '/predict', c)}   "
              f"packserve/minimal {ratio('minimal', '/predict', c)}")
    print(f"  /predict/batch(20) c=64 minimal/reference "
          f"{ratio('minimal-vs-reference', '/predict/batch', 64)}   "
          f"packserve/minimal {ratio('minimal', '/predict/batch', 64)}")
    print(f"  target peak RSS <= 1.1x reference: {rss['packserve'] / rss['reference']:.2f}x")
    print("\nCPU per request (server process tree, user + system): minimal's / packserve's —")
    print("the req/s ratio a CPU-bound server would reach on a quiet host (robust on a shared one)")
    plan = [("/predict", c) for c in conns] + [("/predict/batch", 64)]
    for path, c in plan:
        r = results[("packserve", path, c)]
        line = (f"  {path:<15} c={c:<3} packserve {r['cpu_us']:.0f} us, minimal "
                f"{results[('minimal', path, c)]['cpu_us']:.0f} us: {ratio('cpu:minimal', path, c)}")
        if ("cpu:minimal/b", path, c) in ratios:
            line += (f"   --batching {results[('packserve+batching', path, c)]['cpu_us']:.0f} us: "
                     f"{ratio('cpu:minimal/b', path, c)}")
        print(line)
    if ("cpu:base", "/predict", conns[0]) in ratios:
        print("\nbefore/after (--baseline-src): CPU per request, packserve@base's / packserve's "
              "(> 1: cheaper now), and minimal's / packserve@base's")
        for path, c in plan:
            b = results[("packserve@base", path, c)]
            print(f"  {path:<15} c={c:<3} base {b['cpu_us']:.0f} us: {ratio('cpu:base', path, c)}"
                  f"   minimal/base {ratio('cpu:minimal/base', path, c)}")
    if ("minimal granian/uvicorn", "/predict", conns[0]) in ratios:
        print("\nengines (--engine both): granian/uvicorn, and packserve/minimal on granian")
        plan = [("/predict", c) for c in conns] + [("/predict/batch", 64)]
        for path, c in plan:
            line = f"  {path:<15} c={c:<3}"
            for name in ("packserve", "packserve+batching", "minimal"):
                if (name + " granian/uvicorn", path, c) in ratios:
                    line += f"  {name} {ratio(name + ' granian/uvicorn', path, c)}"
            for name in ("packserve", "packserve+batching"):
                if (name + "@granian/minimal", path, c) in ratios:
                    line += f"  {name}@granian/minimal@granian {ratio(name + '@granian/minimal', path, c)}"
            print(line)
        if "packserve@granian" in rss:
            print(f"  peak RSS packserve@granian / reference: "
                  f"{rss['packserve@granian'] / rss['reference']:.2f}x")


def main() -> None:
    args = parse_args()
    conns = [int(c) for c in args.connections.split(",")]
    wrk = wrkload.ensure_wrk()
    cpus = len(os.sched_getaffinity(0))
    pin_srv, pin_wrk = (None, None) if args.no_pin or cpus < 2 else ("0", "1")

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    servers: list[Server] = []
    results: dict[Key, Row] = {}
    ratios: dict[Key, list[float]] = {}
    try:
        bundle, rows = build_bundle(tmp)
        single = json.dumps({"features": rows[0]})
        batch = json.dumps({"instances": [{"features": r} for r in rows[:20]]})
        servers = start_servers(bundle, args.batching_variant, pin_srv, args.engine == "both",
                                args.baseline_src)
        check_servers(servers, single, batch)
        print(f"cpus={cpus} pinning={'server cpu0 / wrk cpu1' if pin_srv else 'off'} "
              f"duration={args.duration}s", flush=True)
        for s in servers:  # warm-up
            run_wrk(wrk, s.url + "/predict", single, 16, 1.0, pin_wrk, tmp)
        plan = [("/predict", single, c) for c in conns] + [("/predict/batch", batch, 64)]
        for path, body, c in plan:
            measure_setting(servers, wrk, path, body, c, args, pin_wrk, tmp, results, ratios)
        rss = {s.name: s.peak_rss_mib() for s in servers}
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    report(results, ratios, rss, conns, args.rounds)


if __name__ == "__main__":
    main()

"""Overload: open loop at 2x the measured capacity, with a client deadline (issue #15).

For each server variant — ``packserve serve`` with default settings, with ``--batching``, and
the same two with admission control off (``--admission-budget-ms 0``: the behaviour before
issue #15, measured in the same run as the baseline) — this script

1. measures capacity (answered 2xx/s) with a short closed loop (64 connections, 3 s) on the
   family's "no admission" server (run first), the offered rate of both of the family's
   (``--capacity`` fixes it instead);
2. offers 2x that rate open loop for ``--duration`` s (15) with a 5 s client deadline that
   runs from each request's *scheduled* time (later = a timeout). Generator (``--generator``),
   all wrk2's method (``--connections`` connections, one request outstanding on each, latency
   from the schedule, every 503 checked for ``Retry-After``, the generator's own timer
   lateness and CPU reported): ``c`` (default where a C compiler is found), ``overload_gen.c``
   — one thread, epoll, compiled on first use (``overload_c.py``; at 45k req/s on 512
   connections ~14 µs of CPU a request, 0.6x wrk's, and on time); ``wrk`` with a Lua schedule
   (``overload_wrk.py``, one wrk thread per connection: at 512 connections and ~45k req/s the
   threads take its core and it falls behind by seconds); else ``packserve bench`` (asyncio,
   up to 4096 connections, a second client checking 503s every 20 ms) — which tops out near
   10k req/s on one core;
3. meanwhile probes ``GET /health/ready`` every 50 ms (1 s timeout), from a thread on the
   server's CPU at a higher priority (see ``probe_health``);
4. reports: 2xx, 503, timeouts, other errors, accepted p50/p99 (from the scheduled send time),
   health p99/max/failed, 503s without Retry-After, the server's admission counters and
   whether the generator kept up (its timer lateness and CPU).

The server is pinned to CPU 0 and the generator (this process, wrk) to CPU 1 when there are
two CPUs; ``--nice -10`` (root) keeps other jobs on a shared host from taking their CPUs.
Variants are interleaved over ``--rounds``. It measures, it never fails on a target.
``--server granian`` runs every server on that engine.

``--server-cpu-quota CPUS`` runs every server in a cgroup allowed that many CPUs (a CFS quota,
as a container's CPU limit; root; ``cpuquota.py``).

``--baseline-src DIR`` runs each variant again from DIR/src right after (e.g. a worktree of
main): before vs after in one run. ``--refusals`` measures instead what shedding costs, on
chapter-model servers per tree and round: served ``/predict`` a second (default settings,
wrk closed loop, 64 connections, 3 s), then, with ``--max-in-flight 1``, refusals a second
with the model's one slot held by a request whose body never completes (no model work competes with the
refusals); r = served/refused is a refusal's cost in served requests. This tree and the
baseline interleaved over ``--rounds``.

Usage: python benchmarks/bench_overload.py [--duration 15] [--rounds 1] [--factor 2]
       [--server uvicorn|granian] [--refusals [--baseline-src DIR]]
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overload_c
import overload_wrk
from bench_serve import Server, build_bundle, run_wrk, start
from cpuquota import cpu_quota

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


def probe_health(url: str, p: Probes, cpu: int | None) -> None:
    # on the server's CPU (``cpu``), above everything there (root only), so that what it
    # measures is the server's answer, not its own wait for a CPU: on the generator's CPU
    # wrk's 512 threads, all runnable when a burst of refusals comes back, delayed it by
    # hundreds of ms (nice -5 below them was not enough). It costs the server ~20 small
    # requests a second of client work.
    with contextlib.suppress(OSError):
        tid = threading.get_native_id()
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})  # Linux: this thread only
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) - 5)
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


def measure_capacity(srv: Server, bundle: Path, body: bytes, gen: str, tmp: Path) -> float:
    """Closed loop, 64 connections, 3 s: wrk where installed (generator c or wrk), else
    ``packserve bench``."""
    if gen != "asyncio" and overload_wrk.have_wrk():  # answered 2xx/s: refusing is not faster
        r = run_wrk("wrk", srv.url + "/predict", body.decode(), 64, 3.0, None, tmp)
        return r["rps"] - r["errors"] / 3.0
    from packserve.bench import run_bench

    return run_bench(srv.url, concurrency=64, duration=3.0, bundle=bundle).throughput


def offer_asyncio(srv: Server, bundle: Path, rate: float, duration: float) -> dict[str, object]:
    from packserve.bench import run_bench

    res = run_bench(srv.url, rate=rate, duration=duration, bundle=bundle, timeout=5.0,
                    max_connections=4096).to_dict()
    errors: dict[str, int] = res["errors"]  # by status ("503") or kind ("timeout", "reset"...)
    lat = res["latency"]["percentiles_ms"]
    gen = res["generator"]
    return {
        "ok": res["ok"], "503": errors.get("503", 0), "timeouts": errors.get("timeout", 0),
        "other": sum(v for k, v in errors.items() if k not in ("503", "timeout")),
        "p50_ms": round(lat.get("p50", float("nan")), 1), "p99_ms": round(lat.get("p99", float("nan")), 1),
        "generator": "kept up" if gen.get("ok", True) else "could NOT keep up",
        "gen_cpu": round(float(gen.get("cpu_util", 0.0)), 2),
        "gen_lag": f"p50 {float(gen.get('schedule_lag_p50_ms', 0.0)):.1f} ms",
        "connections": gen.get("connections_opened"),
    }


def offer_wrk(srv: Server, body: bytes, rate: float, duration: float, connections: int,
              tmp: Path, gen: str = "wrk") -> dict[str, object]:
    """Open loop from ``overload_c`` (``gen`` "c") or ``overload_wrk``: the same result keys."""
    run_open_loop = overload_c.run_open_loop if gen == "c" else overload_wrk.run_open_loop
    r = run_open_loop(srv.url, body, rate=rate, duration=duration, timeout=5.0,
                      connections=connections, pin=None, tmp=tmp)
    lag_n = max(1, int(str(r["lag_n"])))
    kept_up = int(str(r["lag_over5"])) / lag_n < 0.01 and float(str(r["wrk_cpu"])) < 0.9
    return {
        "ok": r["ok"], "503": r["s503"], "timeouts": int(str(r["late"])) + int(str(r["unanswered"])),
        "other": int(str(r["other"])) + int(str(r["connect_errors"])) + int(str(r["write_errors"])),
        "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "p99_sent_ms": r["p99_sent_ms"],
        "generator": "kept up" if kept_up else "could NOT keep up",
        "gen_cpu": r["wrk_cpu"],
        "gen_lag": f"{r['lag_over5']} of {lag_n} >5 ms late, max {r['lag_max_ms']} ms",
        "connections": connections, "wrk_503_no_retry_after": r["no_retry_after"],
        "wrk_statuses": r["statuses"],
    }


def one_run(
    name: str, srv: Server, bundle: Path, body: bytes, args: argparse.Namespace,
    capacity: dict[str, float], tmp: Path, label: str = "",
) -> dict[str, object]:
    family = name.split(",")[0]
    if family not in capacity or ("no admission" in name and not args.capacity and not label):
        capacity[family] = measure_capacity(srv, bundle, body, args.generator, tmp)
    cap = capacity[family]
    rate = args.factor * cap
    p = Probes()
    threads = [threading.Thread(target=probe_health, args=(srv.url, p, args.server_cpu), daemon=True)]
    if args.generator == "asyncio":  # wrk and overload_gen check every 503 themselves
        threads.append(threading.Thread(target=probe_retry_after, args=(srv.url, body, p), daemon=True))
    for t in threads:
        t.start()
    if args.generator != "asyncio":
        out = offer_wrk(srv, body, rate, args.duration, args.connections, tmp, args.generator)
        p.s503 = int(str(out["503"]))
        p.s503_no_retry_after = int(str(out.pop("wrk_503_no_retry_after")))
    else:
        out = offer_asyncio(srv, bundle, rate, args.duration)
    p.stop.set()
    for t in threads:
        t.join(10)
    row = {
        "variant": name + label, "capacity": round(cap), "offered": round(rate), **out,
        "health_p99_ms": round(pct(p.health_ms, 0.99), 1),
        "health_max_ms": round(max(p.health_ms, default=float("nan")), 1),
        "health_fail": p.health_fail, "health_n": len(p.health_ms),
        "503_checked": p.s503, "503_no_retry_after": p.s503_no_retry_after,
        "server_rejects": admission_counts(srv.url),
    }
    print(row, flush=True)
    return row


def hold_slot(url: str, body: bytes) -> socket.socket:
    """Take a ``--max-in-flight 1`` model's one slot and keep it: a ``/predict`` whose body
    never completes is admitted and waits; every other prediction is refused (no model
    compute competes with the refusals for the CPU). Close the socket to let go."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                 b"content-length: %d\r\n\r\n" % (len(body) + 1) + body)
    deadline = time.monotonic() + 10
    while "requests_in_flight 2.0" not in httpx.get(url + "/metrics").text:  # it + this scrape
        if time.monotonic() > deadline:
            sys.exit("the slot-holding request was never admitted")
        time.sleep(0.01)
    return sock


def refusal_rates(body: bytes, chapter: Path, args: argparse.Namespace, pin: str | None,
                  tmp: Path) -> None:
    """``--refusals``: what a refusal costs, this tree vs ``--baseline-src`` (module doc)."""
    plain = [sys.executable, "-m", "packserve", "serve", str(chapter), "--port", "{port}",
             "--log-level", "warning", "--server", args.server, *args.server_args.split()]
    cmd = [*plain, "--max-in-flight", "1"]
    trees: dict[str, dict[str, str]] = {"this tree": {}}
    if args.baseline_src is not None:
        trees["baseline"] = {"PYTHONPATH": str(args.baseline_src.resolve() / "src")}
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, env in trees.items():
            # served: default settings (with one slot, requests sharing a call are refused)
            srv = start(name, plain, env, "/health/ready", pin, cgroup=args.cgroup)
            try:
                c = run_wrk("wrk", srv.url + "/predict", body.decode(), 64, 3.0, None, tmp)
                served = c["rps"] - c["non2xx"] / 3.0
            finally:
                srv.stop()
            srv = start(name, cmd, env, "/health/ready", pin, cgroup=args.cgroup)
            try:
                held = hold_slot(srv.url, body)
                try:
                    r = run_wrk("wrk", srv.url + "/predict", body.decode(), 64, 3.0, None, tmp)
                finally:
                    held.close()
            finally:
                srv.stop()
            refused = r["non2xx"] / (r["requests"] / r["rps"])
            rates[name].append((refused, served))
            print(f"{name}: {refused:,.0f} refusals/s ({r['requests'] - r['non2xx']:.0f} 2xx, "
                  f"{r['socket_errors']:.0f} socket errors); served {served:,.0f} 2xx/s "
                  f"({c['non2xx']:.0f} non-2xx); r = {served / refused:.2f}", flush=True)
    print(f"\n| server {args.server}, chapter model --max-in-flight 1, wrk 64 connections, 3 s "
          "| refusals/s (slot held, per round) | served /predict 2xx/s | r = served/refused |")
    print("|---|---:|---:|---:|")
    for name, rs in rates.items():
        print(f"| {name} | {' / '.join(f'{a:,.0f}' for a, _ in rs)} "
              f"| {' / '.join(f'{b:,.0f}' for _, b in rs)} "
              f"| {' / '.join(f'{b / a:.2f}' for a, b in rs)} |")


def raise_priority(nice: int) -> None:
    """Niceness for this process and what it starts (server, wrk). With autogroup scheduling
    (Linux's default for sessions) niceness only ranks processes of one session against each
    other, so a new session gets its group's niceness too; other jobs keep running, slower."""
    with contextlib.suppress(OSError):
        os.setsid()
    os.nice(nice)
    with contextlib.suppress(OSError), open("/proc/self/autogroup", "w") as f:
        f.write(str(nice))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--factor", type=float, default=2.0)
    ap.add_argument("--variants", default=";".join(VARIANTS), help="names separated by ;")
    ap.add_argument("--no-pin", action="store_true")
    default_gen = "c" if overload_c.have_cc() else "wrk" if overload_wrk.have_wrk() else "asyncio"
    ap.add_argument("--generator", choices=("c", "wrk", "asyncio"), default=default_gen,
                    help="c: overload_gen.c, one epoll thread (overload_c.py, default with a C "
                    "compiler); wrk: wrk + Lua, one thread a connection (overload_wrk.py); asyncio: "
                    "packserve bench (~10k req/s at most on one core)")
    ap.add_argument("--connections", type=int, default=512,
                    help="c, wrk: connections (wrk: one thread each), the client's pool")
    ap.add_argument("--nice", type=int, default=0,
                    help="run server and generator at this niceness, in a session of their own (e.g. "
                    "-10, as root, on a shared host; see raise_priority). The run then leaves the "
                    "terminal's session: Ctrl-C does not reach it; it ends by itself")
    ap.add_argument("--capacity", type=float, default=0.0,
                    help="req/s to take as capacity for every variant (0: measure, see above)")
    ap.add_argument("--model", choices=("chapter", "slow"), default="chapter",
                    help="slow: a dense 1024x1024x8 ONNX model computed in a thread (~ms per call), "
                    "a rate a generator on a busy host can keep")
    ap.add_argument("--server", choices=("uvicorn", "granian"), default="uvicorn",
                    help="packserve serve --server: the HTTP engine of every server started")
    ap.add_argument("--server-args", default="",
                    help="more `packserve serve` flags for every server, e.g. '--no-coalesce'")
    ap.add_argument("--server-cpu-quota", type=float, default=0.0, metavar="CPUS",
                    help="run every server in a cgroup allowed this many CPUs (a CFS quota, as "
                         "a container's CPU limit; root): cpuquota.py")
    ap.add_argument("--refusals", action="store_true",
                    help="measure refusals a second instead (module doc)")
    ap.add_argument("--baseline-src", type=Path, default=None, metavar="DIR",
                    help="also serve packserve from DIR/src (each variant, right after), interleaved")
    args = ap.parse_args()
    args.cgroup = None
    if args.server_cpu_quota > 0:  # one group for every server of the run, removed at exit
        limit = contextlib.ExitStack()
        atexit.register(limit.close)
        args.cgroup = limit.enter_context(cpu_quota(args.server_cpu_quota))
    cpus = len(os.sched_getaffinity(0))
    pin_srv = None if args.no_pin or cpus < 2 else "0"
    args.server_cpu = None if pin_srv is None else 0
    if pin_srv is not None:
        os.sched_setaffinity(0, {1})  # the generator (wrk inherits it) and probes on the other CPU
    if args.nice:
        raise_priority(args.nice)
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
    if args.refusals:
        refusal_rates(body, bundle, args, pin_srv, tmp)
        return
    py = sys.executable
    rows_out: list[dict[str, object]] = []
    names = [v.strip() for v in args.variants.split(";")]
    print(f"cpus={cpus} pinning={'server cpu0 / generator cpu1' if pin_srv else 'off'} "
          f"duration={args.duration}s factor={args.factor}x model={args.model} "
          f"generator={args.generator} "
          f"connections={args.connections if args.generator != 'asyncio' else '<=4096'} "
          f"nice={args.nice} server={args.server} server_args={args.server_args!r} "
          f"server_cpu_quota={args.server_cpu_quota or 'none'}", flush=True)
    capacity: dict[str, float] = {}
    if args.capacity > 0:
        capacity = {v.split(",")[0]: args.capacity for v in VARIANTS}
    trees: dict[str, dict[str, str]] = {"": {}}
    if args.baseline_src is not None:  # the same variant from the baseline tree right after
        trees[" (baseline)"] = {"PYTHONPATH": str(args.baseline_src.resolve() / "src")}
    for _ in range(args.rounds):
        for name in names:
            for label, env in trees.items():
                srv = start(name, [py, "-m", "packserve", "serve", str(bundle), "--port", "{port}",
                                   "--log-level", "warning", "--server", args.server,
                                   *VARIANTS[name], *args.server_args.split()], env,
                             "/health/ready", pin_srv, cgroup=args.cgroup)
                try:
                    rows_out.append(one_run(name, srv, bundle, body, args, capacity, tmp, label))
                finally:
                    srv.stop()
    print("\n| variant | capacity req/s | offered | 2xx | 503 | timeouts | other errors "
          "| accepted p50 / p99 ms (p99 from send) | health p99 / max ms (failed) "
          "| 503 w/o Retry-After | server rejects "
          "| generator |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for r in rows_out:
        print(f"| {r['variant']} | {r['capacity']} | {r['offered']} | {r['ok']} | {r['503']} "
              f"| {r['timeouts']} | {r['other']} | {r['p50_ms']} / {r['p99_ms']} "
              f"({r.get('p99_sent_ms', '-')}) "
              f"| {r['health_p99_ms']} / {r['health_max_ms']} ({r['health_fail']}) "
              f"| {r['503_no_retry_after']} of {r['503_checked']} | {r['server_rejects']} "
              f"| {r['generator']}, cpu {r['gen_cpu']}, {r['gen_lag']} |")
    if args.rounds > 1:
        for name in {str(r["variant"]) for r in rows_out}:
            p99 = [float(str(r["p99_ms"])) for r in rows_out if r["variant"] == name]
            print(f"{name}: median accepted p99 {statistics.median(p99):.1f} ms over {len(p99)} rounds")


if __name__ == "__main__":
    main()

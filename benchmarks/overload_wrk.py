"""An open-loop load generator in C: wrk driven by a Lua schedule (wrk2's method), for bench_overload.

The asyncio generator of ``packserve bench`` tops out near 10k requests/s on one core — less
than twice a fast server's capacity, so an overload run measured the generator. wrk (a C
event loop, Debian package ``wrk``) sends the same schedule for a fraction of the CPU.

Method (as wrk2): ``-c N -t N`` — one connection per wrk thread, each with its own Lua state
and its own share of the schedule (rate / N, phase-shifted so the threads interleave).
``delay()`` holds each request until it is due; ``response()`` measures latency from the
**scheduled** time, so a slow answer shows in every request that was due behind it (no
coordinated omission); ``p99_sent_ms`` is the same from when the request was sent (the
server's share plus wrk's delay in reading the answer: without the generator's own lateness,
which at ~24k req/s with 512 threads on one core reaches seconds). A request answered more
than ``timeout`` after it was due is a timeout (the client gave up); one still unanswered at
the end, too. After ``duration`` no new request becomes due and the run goes on ``timeout`` +
1 s so that everything due gets its answer or its timeout. Every 503 is checked for
``Retry-After``. The generator checks itself: how late a request left when its connection
was idle (timer lateness = the generator starved, not the server slow) and its CPU time.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
from pathlib import Path

__all__ = ["LUA", "have_wrk", "run_generator", "run_open_loop"]

LUA = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } ps_timespec;
int clock_gettime(int clk, ps_timespec *tp);
]]
local ts = ffi.new("ps_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local RATE, DURATION_MS, TIMEOUT_MS = %(rate)r, %(duration_ms)r, %(timeout_ms)r
local THREADS, START_MS = %(threads)d, %(start_ms)r
local BODY = [==[%(body)s]==]
local threads = {}
local id_counter = 0

function setup(thread)
  thread:set("id", id_counter)
  id_counter = id_counter + 1
  table.insert(threads, thread)
end

function init(args)
  interval = THREADS * 1000 / RATE
  first = START_MS + id * 1000 / RATE
  last = START_MS + DURATION_MS
  k = 0
  due_total = last >= first and math.floor((last - first) / interval) + 1 or 0
  due = nil
  ok, s503, no_ra, late, other, scheduled = 0, 0, 0, 0, 0, 0
  statuses = {}
  hist = {}      -- 2xx latency (from the scheduled time), 0.1 ms buckets
  shist = {}     -- 2xx latency from when the request was sent: the server's share
  sent_at = 0
  lag_n, lag_over5 = 0, 0
  lag_max = 0
  waiting_for = nil
  req = wrk.format("POST", "/predict", {["Content-Type"] = "application/json"}, BODY)
end

function delay()
  local d = first + k * interval
  if d > last then
    waiting_for = nil
    return 3600000  -- past the schedule: send nothing more
  end
  due = d
  k = k + 1
  scheduled = k
  local wait = d - now_ms()
  if wait > 0 then
    waiting_for = d
    return math.ceil(wait)
  end
  waiting_for = nil
  return 0
end

function request()
  if waiting_for ~= nil then  -- the connection was idle: how late did the timer fire?
    local lag = now_ms() - waiting_for
    lag_n = lag_n + 1
    if lag > 5 then lag_over5 = lag_over5 + 1 end
    if lag > lag_max then lag_max = lag end
  end
  sent_at = now_ms()
  return req
end

function response(status, headers, body)
  local lat = now_ms() - due
  if lat > TIMEOUT_MS then
    late = late + 1
  elseif status >= 200 and status < 300 then
    ok = ok + 1
    local b = math.floor(lat * 10)
    hist[b] = (hist[b] or 0) + 1
    local sb = math.floor((now_ms() - sent_at) * 10)
    shist[sb] = (shist[sb] or 0) + 1
  elseif status == 503 then
    s503 = s503 + 1
    if headers["retry-after"] == nil and headers["Retry-After"] == nil then no_ra = no_ra + 1 end
  else
    other = other + 1
    statuses[status] = (statuses[status] or 0) + 1
  end
end

function done(summary, latency, requests)
  local t = {ok = 0, s503 = 0, no_ra = 0, late = 0, other = 0, scheduled = 0, due_total = 0,
             lag_n = 0, lag_over5 = 0, lag_max = 0, statuses = {}, hist = {}, shist = {}}
  for _, th in ipairs(threads) do
    for _, key in ipairs({"ok", "s503", "no_ra", "late", "other", "scheduled", "due_total",
                          "lag_n", "lag_over5"}) do
      t[key] = t[key] + th:get(key)
    end
    t.lag_max = math.max(t.lag_max, th:get("lag_max"))
    for s, n in pairs(th:get("statuses")) do t.statuses[tostring(s)] = (t.statuses[tostring(s)] or 0) + n end
    for b, n in pairs(th:get("hist")) do t.hist[b] = (t.hist[b] or 0) + n end
    for b, n in pairs(th:get("shist")) do t.shist[b] = (t.shist[b] or 0) + n end
  end
  local function pct_of(h, q)
    local keys = {}
    for b, _ in pairs(h) do table.insert(keys, b) end
    table.sort(keys)
    local need, seen = math.ceil(q * t.ok), 0
    for _, b in ipairs(keys) do
      seen = seen + h[b]
      if seen >= need then return (b + 1) / 10 end
    end
    return -1
  end
  local function pct(q) return pct_of(t.hist, q) end
  local e = summary.errors
  local st = {}
  for s, n in pairs(t.statuses) do table.insert(st, string.format("\"%%s\": %%d", s, n)) end
  io.write(string.format(
    "RESULT {\"ok\": %%d, \"s503\": %%d, \"no_retry_after\": %%d, \"late\": %%d, \"other\": %%d, " ..
    "\"scheduled\": %%d, \"sent\": %%d, \"answered\": %%d, " ..
    "\"p50_ms\": %%.1f, \"p99_ms\": %%.1f, \"max_ms\": %%.1f, \"p99_sent_ms\": %%.1f, " ..
    "\"lag_n\": %%d, \"lag_over5\": %%d, \"lag_max_ms\": %%.1f, \"connect_errors\": %%d, " ..
    "\"read_errors\": %%d, \"write_errors\": %%d, \"statuses\": {%%s}}\n",
    t.ok, t.s503, t.no_ra, t.late, t.other, t.due_total, t.scheduled, summary.requests, pct(0.5),
    pct(0.99), pct(1.0), pct_of(t.shist, 0.99), t.lag_n, t.lag_over5, t.lag_max, e.connect, e.read,
    e.write, table.concat(st, ", ")))
end
"""


def have_wrk() -> str | None:
    return shutil.which("wrk")


def _monotonic_ms() -> float:
    import time

    return time.monotonic() * 1000.0


def run_open_loop(
    url: str, body: bytes, *, rate: float, duration: float, timeout: float, connections: int,
    pin: str | None, tmp: Path,
) -> dict[str, object]:
    """Offer ``rate`` req/s of ``POST /predict`` for ``duration`` s; see the module doc."""
    wrk = have_wrk()
    if wrk is None:
        raise RuntimeError("wrk is not installed (apt-get install -y wrk)")
    start_ms = _monotonic_ms() + 1500.0  # every thread connected and initialised by then
    script = tmp / "overload.lua"
    script.write_text(LUA % {
        "rate": float(rate), "duration_ms": duration * 1000.0, "timeout_ms": timeout * 1000.0,
        "threads": connections, "start_ms": start_ms, "body": body.decode(),
    })
    run_s = 1.5 + duration + timeout + 1.0
    cmd = [wrk, f"-t{connections}", f"-c{connections}", f"-d{round(run_s)}s",
           "--timeout", f"{round(timeout * 2)}s", "-s", str(script), url]
    return run_generator("wrk", cmd, run_s, pin)


def run_generator(what: str, cmd: list[str], run_s: float, pin: str | None) -> dict[str, object]:
    """Run a generator (``cmd``, under ``taskset`` if ``pin``) that prints one ``RESULT {...}``
    line with the keys of this module's Lua ``done()``; add its CPU share of one core over the
    run (``wrk_cpu``) and ``unanswered`` (scheduled, neither answered nor late)."""
    if pin is not None:
        cmd = ["taskset", "-c", pin, *cmd]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=run_s + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"{what} gave no result (exit {out.returncode}):\n"
                           f"{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    r: dict[str, object] = json.loads(line[7:])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    r["wrk_cpu"] = round(cpu / run_s, 2)  # share of one core over the run
    answered = int(r["ok"]) + int(r["s503"]) + int(r["late"]) + int(r["other"])  # type: ignore[call-overload]
    r["unanswered"] = int(r["scheduled"]) - answered  # type: ignore[call-overload]
    return r

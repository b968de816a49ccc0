"""Server processes for the benchmarks: start one on a free port, wait until it is ready, read
what it cost (CPU, peak RSS, ``/metrics``), stop it with SIGTERM.

One copy for every benchmark so that each measures its servers the same way (the same ready
rule, the same pinning, the same stop); run a benchmark, not this module.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

ROOT = Path(__file__).resolve().parents[1]
_TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_cmd(bundle: Path | None = None, *flags: str) -> list[str]:
    """``packserve serve [BUNDLE] --port {port} --log-level warning FLAGS`` (``{port}``: see
    :func:`start`); without ``bundle`` the server reads ``PACKSERVE_MODEL_PATH``."""
    where = [str(bundle)] if bundle is not None else []
    return [sys.executable, "-m", "packserve", "serve", *where, "--port", "{port}",
            "--log-level", "warning", *flags]


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    url: str
    ready_path: str = "/health/ready"
    log: IO[bytes] = field(default_factory=tempfile.TemporaryFile)  # stdout + stderr

    def output(self, last: int = 2000) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-last:]

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_s(self) -> float:
        """CPU seconds (user + system, every thread) of the server and its child processes
        (granian's worker): what a request costs, whatever share of the CPU it was given."""
        return sum(_cpu_s(pid) for pid in _tree(self.proc.pid))

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=5).text

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM (the server drains), SIGKILL after ``grace_s``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # exited meanwhile
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime (every thread)


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the benchmark's ``taskset`` execs, granian forks)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            with contextlib.suppress(OSError):  # exited meanwhile
                todo.extend(int(c) for c in task.read_text().split())
    return out


def start(name: str, cmd: Sequence[str], env: Mapping[str, str] | None = None,
          ready_path: str = "/health/ready", pin: str | None = None, *,
          timeout: float = 120.0, cgroup: Path | None = None) -> Server:
    """Start ``cmd`` (``{port}`` in it becomes a free port; ``env`` added to this process's;
    ``pin``: a ``taskset -c`` CPU list) in the repository root and wait until ``ready_path``
    answers 200. A server that exits or is not ready in ``timeout`` s: RuntimeError with the
    end of its output (and it is stopped)."""
    port = free_port()
    argv = [c.replace("{port}", str(port)) for c in cmd]
    if pin is not None:
        argv = ["taskset", "-c", pin, *argv]
    if cgroup is not None:  # the shell joins the group, then becomes the server (exec)
        argv = ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(cgroup), *argv]
    log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=log, stderr=subprocess.STDOUT)
    srv = Server(name, proc, f"http://127.0.0.1:{port}", ready_path, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = srv.output()
            srv.stop()
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{out}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(srv.url + ready_path, timeout=2).status_code == 200:
                return srv
        time.sleep(0.1)
    out = srv.output()
    srv.stop()
    raise RuntimeError(f"{name} not ready after {timeout:g} s:\n{out}")


__all__ = ["ROOT", "Server", "free_port", "serve_cmd", "start"]

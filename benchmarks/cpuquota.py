"""A CPU limit for a benchmarked server, as a container runtime sets one (issue #15).

Kubernetes CPU limits are CFS quotas: ``--server-cpu-quota 0.5`` runs each server in a
cgroup allowed half a CPU (``cpu.max`` on cgroup v2, ``cpu.cfs_quota_us`` /
``cpu.cfs_period_us`` on v1). It is also the way to offer 2x a fast server's capacity from
one generator core: the server's capacity shrinks with its quota, the cost of a refusal
relative to an answer does not. Needs root and a writable cgroup mount; the group is removed
at exit.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["cpu_quota"]

ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 10_000  # a short period: throttling in 10 ms slices, as many runtimes configure


@contextlib.contextmanager
def cpu_quota(fraction: float) -> Iterator[Path]:
    """A cgroup limited to ``fraction`` of a CPU; yields its ``cgroup.procs`` file (a process
    that writes its PID there, and its children, run under the limit)."""
    name = f"packserve-bench-{os.getpid()}"
    quota = max(1000, int(PERIOD_US * fraction))
    if (ROOT / "cgroup.controllers").exists():  # v2
        group = ROOT / name
        group.mkdir()
        (group / "cpu.max").write_text(f"{quota} {PERIOD_US}\n")
    else:  # v1: the cpu controller's own hierarchy
        group = ROOT / "cpu" / name
        group.mkdir()
        (group / "cpu.cfs_period_us").write_text(f"{PERIOD_US}\n")
        (group / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    try:
        yield group / "cgroup.procs"
    finally:
        for _ in range(50):  # its processes may take a moment to be gone
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)


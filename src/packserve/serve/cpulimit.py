"""How much CPU this process may use: its affinity, capped by its cgroup's CPU quota.

A container's CPU limit (Kubernetes ``resources.limits.cpu``, ``docker --cpus``) is a CFS
quota: the process runs for ``quota`` µs of every ``period`` and is then stopped until the
next period. A saturated process under a limit of half a CPU therefore shows half as much CPU
time as wall time — and a saturation test of "CPU time ≈ wall time" never fires (measured:
under a 0.5-CPU quota the door's quota refused nothing at 2x and 227k requests timed out;
issue #15 notes, Session 5). Saturation must be judged against what the process may use,
as Go's automaxprocs and the JVM's container support do.

Both cgroup versions are read, for this process's own group and its ancestors (the
tightest wins): v2 ``cpu.max`` (``"max 100000"`` or ``"50000 100000"``), v1
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (``-1``: none). Anything unreadable: no limit.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["cgroup_cpu_limit", "usable_cpus"]

_PROC_CGROUP = Path("/proc/self/cgroup")
_CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cpus(*, proc_cgroup: Path = _PROC_CGROUP, root: Path = _CGROUP_ROOT) -> float:
    """CPUs' worth of time this process may use a second (affinity, then the cgroup quota)."""
    try:
        cpus = float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        cpus = float(os.cpu_count() or 1)
    limit = cgroup_cpu_limit(proc_cgroup=proc_cgroup, root=root)
    return cpus if limit is None else max(0.01, min(cpus, limit))


def cgroup_cpu_limit(*, proc_cgroup: Path = _PROC_CGROUP, root: Path = _CGROUP_ROOT) -> float | None:
    """The tightest CFS quota (in CPUs) over this process's cgroup and its ancestors, or None."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    limits: list[float] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # cgroup v2: "0::/path"
            limits += _walk(root, path, _v2_limit)
        elif "cpu" in controllers.split(","):  # v1: mounted as cpu, or cpu,cpuacct
            for mount in (root / "cpu", root / "cpu,cpuacct", root / "cpuacct,cpu"):
                if mount.is_dir():
                    limits += _walk(mount, path, _v1_limit)
                    break
    return min(limits) if limits else None


def _walk(mount: Path, path: str, read: Callable[[Path], float | None]) -> list[float]:
    """Limits of the group at ``path`` under ``mount`` and of each ancestor up to ``mount``."""
    found: list[float] = []
    group = mount / path.strip("/") if path.strip("/") else mount
    while True:
        limit = read(group)
        if limit is not None:
            found.append(limit)
        if group == mount or mount not in group.parents:
            return found
        group = group.parent


def _v2_limit(group: Path) -> float | None:
    try:
        quota, period = (group / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _v1_limit(group: Path) -> float | None:
    try:
        quota = int((group / "cpu.cfs_quota_us").read_text())
        period = int((group / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period

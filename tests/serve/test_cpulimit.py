"""A container's CPU limit is read from the cgroup (v1 and v2, own group and ancestors), and
the door's saturation quota judges a throttled loop against it (serve/cpulimit.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from packserve.serve.cpulimit import cgroup_cpu_limit, usable_cpus
from packserve.serve.saturation import UNLIMITED, PollQuota


def _tree(tmp_path: Path, proc: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    (root / "cpu").mkdir(parents=True, exist_ok=True)
    proc_file = tmp_path / "proc_cgroup"
    proc_file.write_text(proc)
    return proc_file, root


def test_v2_quota_of_the_own_group(tmp_path: Path) -> None:
    proc, root = _tree(tmp_path, "0::/kubepods/pod1/c1\n", {
        "kubepods/pod1/c1/cpu.max": "50000 100000\n", "kubepods/cpu.max": "max 100000\n"})
    assert cgroup_cpu_limit(proc_cgroup=proc, root=root) == 0.5
    assert usable_cpus(proc_cgroup=proc, root=root) == 0.5


def test_the_tightest_ancestor_wins(tmp_path: Path) -> None:
    proc, root = _tree(tmp_path, "0::/a/b\n", {
        "a/b/cpu.max": "max 100000\n", "a/cpu.max": "150000 100000\n", "cpu.max": "max 100000\n"})
    assert cgroup_cpu_limit(proc_cgroup=proc, root=root) == 1.5
    assert usable_cpus(proc_cgroup=proc, root=root) <= 1.5


def test_v1_quota_and_no_quota(tmp_path: Path) -> None:
    proc, root = _tree(tmp_path, "4:memory:/x\n1:cpu,cpuacct:/ps\n", {
        "cpu,cpuacct/ps/cpu.cfs_quota_us": "25000\n", "cpu,cpuacct/ps/cpu.cfs_period_us": "100000\n",
        "cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"})
    (root / "cpu").rmdir()  # mounted as cpu,cpuacct only
    assert cgroup_cpu_limit(proc_cgroup=proc, root=root) == 0.25
    proc.write_text("1:cpu,cpuacct:/\n")
    assert cgroup_cpu_limit(proc_cgroup=proc, root=root) is None


def test_unreadable_or_unlimited_means_no_limit(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(proc_cgroup=tmp_path / "missing", root=tmp_path) is None
    proc, root = _tree(tmp_path, "0::/\n", {"cpu.max": "max 100000\n"})
    assert cgroup_cpu_limit(proc_cgroup=proc, root=root) is None
    proc.write_text("0::/\n")
    (root / "cpu.max").write_text("garbage")
    assert cgroup_cpu_limit(proc_cgroup=proc, root=root) is None


def _quota_after_saturation(cpus: float, cpu_share: float) -> int:
    """The quota after 10 iterations of 10 ms in which the loop used ``cpu_share`` of the wall."""
    t = {"wall": 100.0, "cpu": 100.0}
    quota = PollQuota(floor=4, sustain_s=0.03, long_s=0.005, cpus=cpus,
                      clocks=(lambda: t["wall"], lambda: t["cpu"], lambda: t["cpu"]))

    async def main() -> None:
        for _ in range(10):
            for _ in range(100):
                quota.admit()
            t["wall"] += 0.01
            t["cpu"] += 0.01 * cpu_share
            await asyncio.sleep(0)

    asyncio.run(main())
    return quota.quota


def test_a_throttled_loop_at_its_limit_is_saturated() -> None:
    """Half a CPU allowed, half the wall time used: saturated (before: judged idle, never shed)."""
    assert _quota_after_saturation(cpus=0.5, cpu_share=0.5) < 100
    assert _quota_after_saturation(cpus=1.0, cpu_share=0.5) == UNLIMITED  # no limit: it idles
    assert _quota_after_saturation(cpus=0.5, cpu_share=0.3) == UNLIMITED  # below its limit

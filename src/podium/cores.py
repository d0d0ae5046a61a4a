"""How many CPUs this process may use, on how many physical cores, and how many are busy now."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _allowed() -> set[int] | None:
    """The CPUs in this process's affinity mask (None where the OS has none: macOS)."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def usable_cores(cgroup_root: Path = CGROUP_ROOT) -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one, else the machine's),
    no more than its container's CPU quota rounded up (:func:`cpu_quota`)."""
    allowed = _allowed()
    cpus = len(allowed) if allowed is not None else os.cpu_count() or 1
    quota = cpu_quota(cgroup_root)
    return cpus if quota is None else max(1, min(cpus, math.ceil(quota)))


def cpu_quota(cgroup_root: Path = CGROUP_ROOT) -> float | None:
    """The CPUs' worth of time a period this process's cgroup may use (``docker run --cpus``, a
    Kubernetes CPU limit): cgroup v2's ``cpu.max``, else v1's ``cpu/cpu.cfs_quota_us`` over
    ``cpu.cfs_period_us``, as a container sees them at the cgroup root; None when unlimited or unknown.
    A quota is not in the affinity mask: a container limited to 2 CPUs on a 16-CPU host sees 16."""
    try:
        quota, _, period = (cgroup_root / "cpu.max").read_text().partition(" ")
    except OSError:
        try:
            quota = (cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text()
            period = (cgroup_root / "cpu" / "cpu.cfs_period_us").read_text()
        except OSError:
            return None
    try:
        cpus = int(quota) / int(period)
    except ValueError:  # "max" (v2): no limit
        return None
    return cpus if cpus > 0 else None  # -1 (v1): no limit


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads of one core count once), no more than
    :func:`usable_cores` (a container's CPU quota). llama.cpp's decode is memory-bound: a second
    thread on the same core adds little, and more threads than cores makes it slower."""
    return min(_cores_in_topology(), usable_cores())


def _cores_in_topology() -> int:
    """The physical cores of the CPUs allowed; else the CPUs allowed, else ``os.cpu_count()``."""
    allowed = _allowed()
    if allowed is None:
        return os.cpu_count() or 1
    cores = set()
    for cpu in allowed:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text(), (topology / "core_id").read_text()))
        except OSError:
            return len(allowed)
    return max(1, len(cores))


def busy_cpus(window_s: float = 0.2) -> float:
    """How many of the CPUs this process may run on are busy now: their time not idle over
    ``window_s`` (Linux ``/proc/stat``; steal counts as busy). Elsewhere the 1-minute load average,
    which lags: a job that ended a minute ago still counts (it made the embedded model's default
    one thread on an idle machine, 0.68x the best setting, in session 17)."""
    try:
        before = _cpu_times()
        time.sleep(window_s)
        after = _cpu_times()
    except (OSError, ValueError):  # no affinity mask (macOS) or no /proc/stat
        try:
            return os.getloadavg()[0]
        except OSError:
            return 0.0
    return busy_between(before, after)


def busy_between(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> float:
    """Busy CPUs between two :func:`_cpu_times` readings (each CPU: its busy fraction, summed)."""
    busy = 0.0
    for cpu, (total, idle) in after.items():
        if cpu in before:
            spent = total - before[cpu][0]
            if spent > 0:
                busy += max(0.0, 1.0 - (idle - before[cpu][1]) / spent)
    return busy


def _cpu_times() -> dict[str, tuple[int, int]]:
    """For each CPU this process may run on: (all its time, its idle and I/O-wait time), in ticks."""
    allowed = {f"cpu{n}" for n in _allowed() or ()}
    times = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, _, rest = line.partition(" ")
        if name in allowed:
            ticks = [int(x) for x in rest.split()[:8]]  # user nice system idle iowait irq softirq steal
            times[name] = (sum(ticks), ticks[3] + ticks[4])
    if not times:
        raise ValueError("no per-CPU lines in /proc/stat for the CPUs allowed")
    return times

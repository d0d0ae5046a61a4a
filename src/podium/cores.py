"""How many CPUs this process may use."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cores(cgroup_root: Path = CGROUP_ROOT) -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one, else the machine's),
    no more than its container's CPU quota rounded up (:func:`cpu_quota`)."""
    affinity = getattr(os, "sched_getaffinity", None)
    cpus = len(affinity(0)) if affinity is not None else os.cpu_count() or 1
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

"""A container's CPU quota bounds the cores podium uses (llama.cpp threads, the server's trace
writer, eval replay's jobs): the affinity mask does not show it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from podium.cores import cpu_quota, usable_cores


def write(root: Path, name: str, text: str) -> None:
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(text)


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "150000 100000\n"}, 1.5),  # cgroup v2: docker run --cpus 1.5
        ({"cpu.max": "max 100000\n"}, None),  # v2, unlimited
        ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.0),  # v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),  # v1, unlimited
        ({}, None),  # no cgroup files: not known
    ],
)
def test_the_quota_is_read_from_either_cgroup_version(
    tmp_path: Path, files: dict[str, str], quota: float | None
) -> None:
    for name, text in files.items():
        write(tmp_path, name, text)
    assert cpu_quota(tmp_path) == quota


def test_usable_cores_are_the_quota_rounded_up_within_the_cpus_allowed(tmp_path: Path) -> None:
    allowed = len(os.sched_getaffinity(0))
    write(tmp_path, "cpu.max", "50000 100000\n")  # half a CPU
    assert usable_cores(tmp_path) == 1
    write(tmp_path, "cpu.max", f"{(allowed + 3) * 100000} 100000\n")  # more than there is
    assert usable_cores(tmp_path) == allowed
    write(tmp_path, "cpu.max", "max 100000\n")
    assert usable_cores(tmp_path) == allowed

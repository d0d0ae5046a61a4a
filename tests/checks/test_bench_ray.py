"""``podium bench run --ray ADDRESS`` on a real Ray head (127.0.0.1, started once for this module):
the same rows as the single-process run, traces and grades stored by the Ray workers, resumable."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench_fakes import code_tasks, write_code_pool
from local_servers import free_port
from podium.traces.store import Store

REPO = Path(__file__).resolve().parents[2]
VOLATILE = ("run_id", "time", "latency_s")  # differ between any two runs, local or not


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``ray start --head --block`` in its own process group on 127.0.0.1; yields HOST:PORT."""
    ray_cli = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
    if not Path(ray_cli).exists():
        pytest.fail("ray not found: install the ray extra (pip install 'podium[ray]'; make setup does)", pytrace=False)
    port, temp = free_port(), tmp_path_factory.mktemp("ray")
    log = (temp / "head.log").open("w")
    args = [ray_cli, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2"]
    args += ["--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"]
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, (temp / "head.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the head and what it started: our process group only
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group (the head may leave some behind)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
        log.close()


def bench(out: Path, pool: str, tasks: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    paths = [str(REPO / "src"), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    args = ["bench", "run", str(tasks), "--pool", pool, "--coordinators", "rules", "--out", str(out), "--no-plot"]
    return subprocess.run(
        [sys.executable, "-m", "podium", *args, *extra], capture_output=True, text=True, env=env, timeout=600
    )


def rows(out: Path) -> list[dict]:
    got = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return sorted(
        ({k: v for k, v in r.items() if k not in VOLATILE} for r in got), key=lambda r: (r["task"], r["coordinator"])
    )


def test_ray_bench_equals_local_and_resumes(ray_head: str, tmp_path: Path, podium_home: Path) -> None:
    pool = write_code_pool(tmp_path)
    tasks = tmp_path / "code.jsonl"
    tasks.write_text("".join(json.dumps(r) + "\n" for r in code_tasks(6)))
    local = bench(tmp_path / "local", pool, tasks, "--limit", "5", "--seed", "3")
    assert local.returncode == 0, local.stderr
    on_ray = bench(tmp_path / "ray", pool, tasks, "--limit", "5", "--seed", "3", "--ray", ray_head)
    assert on_ray.returncode == 0, on_ray.stderr
    assert "runs to do on Ray" in on_ray.stderr and "15/15 runs" in on_ray.stderr  # progress came back
    expected = rows(tmp_path / "local")
    assert len(expected) == 15 and rows(tmp_path / "ray") == expected
    assert {r["passed"] for r in expected} == {True, False}  # the comparison covers passes and failures

    stored = list(Store.open().iter_runs())  # the Ray workers stored their traces, with grades
    assert len(stored) == 30 and sum(r["grade_source"] == "check:python_tests" for r in stored) == 30

    again = bench(tmp_path / "ray", pool, tasks, "--limit", "6", "--seed", "3", "--ray", ray_head)
    assert again.returncode == 0 and "3 runs to do on Ray" in again.stderr  # resumed: only the new item
    assert len(rows(tmp_path / "ray")) == 18


def test_ray_unreachable_is_one_line(tmp_path: Path) -> None:
    pool = write_code_pool(tmp_path)
    tasks = tmp_path / "code.jsonl"
    tasks.write_text("".join(json.dumps(r) + "\n" for r in code_tasks(1)))
    done = bench(tmp_path / "out", pool, tasks, "--ray", f"127.0.0.1:{free_port()}")
    assert done.returncode == 2 and "cannot connect to a Ray cluster" in done.stderr and "Traceback" not in done.stderr

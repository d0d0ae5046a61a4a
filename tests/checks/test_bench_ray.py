"""``podium bench run --ray ADDRESS`` on a real Ray head on 127.0.0.1 (the session's, from
tests/local_servers.py): the same rows as the single-process run, traces and grades stored by the
Ray workers, resumable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench_fakes import code_tasks, write_code_pool
from local_servers import free_port
from podium.traces.store import Store

REPO = Path(__file__).resolve().parents[2]
VOLATILE = ("run_id", "time", "latency_s")  # differ between any two runs, local or not


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

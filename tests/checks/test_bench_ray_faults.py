"""``podium bench run --ray`` when things go wrong, on the session's real Ray head (127.0.0.1): the
driver killed mid-run resumes without re-running the graded items and ends with the local run's
rows; a Ray worker process killed mid-task has its item retried and the run completes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from bench_fakes import code_tasks, write_code_pool

REPO = Path(__file__).resolve().parents[2]
VOLATILE = ("run_id", "time", "latency_s")


def mortal_pool(folder: Path) -> str:
    """The code pool whose ``coder`` is :func:`bench_fakes.mortal_coder` (``coder`` unless told otherwise)."""
    path = Path(write_code_pool(folder))
    pool = yaml.safe_load(path.read_text())
    for model in pool["models"]:
        if model["name"] == "coder":
            model["function"] = "bench_fakes:mortal_coder"
    path.write_text(yaml.safe_dump(pool))
    return str(path)


def bench_args(out: Path, pool: str, tasks: Path, *extra: str) -> list[str]:
    args = ["bench", "run", str(tasks), "--pool", pool, "--coordinators", "rules", "--out", str(out), "--no-plot"]
    return [sys.executable, "-m", "podium", *args, "--limit", "4", "--seed", "3", *extra]


def env(**extra: str) -> dict[str, str]:
    paths = [str(REPO / "src"), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), **extra}


def rows(out: Path) -> list[dict]:
    got = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    return sorted(
        ({k: v for k, v in r.items() if k not in VOLATILE} for r in got), key=lambda r: (r["task"], r["coordinator"])
    )


def setup(tmp_path: Path, podium_home: Path) -> tuple[str, Path, list[dict]]:
    pool = mortal_pool(tmp_path)
    tasks = tmp_path / "code.jsonl"
    tasks.write_text("".join(json.dumps(r) + "\n" for r in code_tasks(4)))
    local = subprocess.run(bench_args(tmp_path / "local", pool, tasks), env=env(), capture_output=True, text=True)
    assert local.returncode == 0, local.stderr[-2000:]
    expected = rows(tmp_path / "local")
    assert len(expected) == 12 and {r["passed"] for r in expected} == {True, False}
    return pool, tasks, expected


def test_ray_bench_resumes_after_the_driver_is_killed(ray_head: str, tmp_path: Path, podium_home: Path) -> None:
    pool, tasks, expected = setup(tmp_path, podium_home)
    out = tmp_path / "ray"
    args = bench_args(out, pool, tasks, "--ray", ray_head)
    first = subprocess.Popen(args, env=env(PODIUM_TEST_SLOW="0.4"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and first.poll() is None:
        if results.is_file() and len(results.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)  # the driver dies mid-run
    first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL, (first.stderr.read() if first.stderr else b"")[-2000:]
    done = rows(out)
    assert 3 <= len(done) < 12  # some graded, some not
    resumed = subprocess.run(args, env=env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{12 - len(done)} runs to do on Ray" in resumed.stderr  # the graded items are not re-run
    assert rows(out) == expected  # and the whole run equals the local one


def test_ray_bench_retries_the_item_of_a_killed_worker(ray_head: str, tmp_path: Path, podium_home: Path) -> None:
    pool, tasks, expected = setup(tmp_path, podium_home)
    mark = tmp_path / "killed"
    victim = code_tasks(4)[1]["prompt"].split("`")[1].split("(")[0]
    killing = env(PODIUM_TEST_DIE_ON=victim, PODIUM_TEST_DIE_MARK=str(mark))
    out = tmp_path / "ray"
    done = subprocess.run(bench_args(out, pool, tasks, "--ray", ray_head), env=killing, capture_output=True, text=True)
    assert mark.is_file(), "no worker was killed"  # a worker process died mid-task ...
    pid = int(mark.read_text())
    assert not Path(f"/proc/{pid}").exists() or b"ray" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert done.returncode == 0, done.stderr[-2000:]  # ... and the run completed
    assert rows(out) == expected  # its item was retried on another worker: the same rows as the local run

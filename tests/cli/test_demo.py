"""`podium demo` (make demo): single call vs the loop with the task's check as verifier, graded by
the same check, printed side by side. Scripted worker (tests/demo_worker.py), real checks, real CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO
from podium.demo import demo_pool, load_tasks
from podium.pool import load_pool

POOL = """name: demo-test
models:
  - {name: coder, backend: scripted, function: "demo_worker:answer"}
defaults: {thinker: coder, worker: coder, verifier: coder, coordinator: coder}
"""
TASKS = """tasks:
  - {id: easy, question: "easy: write add(a, b)", check: {type: python_tests, tests: ["assert add(2, 3) == 5"]}}
  - {id: retry, question: "write add(a, b) returning the sum", check: {type: python_tests, tests: ["assert add(2, 3) == 5"]}}
  - {id: double, question: "write double(x)", check: {type: python_tests, tests: ["assert double(4) == 8"]}}
  - {id: hopeless, question: "hopeless: what is 6 * 7?", check: {type: number, answer: 42}}
"""


def test_demo_shows_single_call_and_loop_side_by_side(tmp_path: Path) -> None:
    (tmp_path / "pool.yaml").write_text(POOL)
    (tmp_path / "tasks.yaml").write_text(TASKS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "tests")])}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "podium",
            "demo",
            "--pool",
            str(tmp_path / "pool.yaml"),
            "--tasks",
            str(tmp_path / "tasks.yaml"),
            "--max-turns",
            "4",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rows = {
        line.split()[0]: line for line in proc.stdout.splitlines() if re.match(r"^(easy|retry|double|hopeless) ", line)
    }
    assert re.search(r"PASS\s+1 call .*PASS\s+1 call", rows["easy"])
    assert re.search(r"fail\s+1 call .*PASS\s+2 calls", rows["retry"])  # the failing test went back to the worker
    assert re.search(r"fail\s+1 call .*PASS\s+2 calls", rows["double"])
    assert re.search(r"fail\s+1 call .*fail\s+2 calls", rows["hopeless"])  # 4 turns: answer, check, answer, check
    assert re.search(r"passed\s+1/4\s+3/4", proc.stdout)
    assert "stand-in" not in proc.stdout  # the 135M caveat is for the embedded pool


def test_shipped_tasks_and_demo_pool() -> None:
    tasks = load_tasks()
    assert 5 <= len(tasks) <= 10 and len({t.id for t in tasks}) == len(tasks)
    assert {t.check.type for t in tasks} >= {"python_tests", "number"}
    pool = demo_pool(load_pool("embedded"), plan=False)
    assert not pool.candidates("thinker") and all(m.extra_body.get("seed") == 7 for m in pool.config.models)
    assert load_pool("embedded").candidates("thinker")  # the shipped pool is untouched

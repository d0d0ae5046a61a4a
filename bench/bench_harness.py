"""Overhead of the ``podium bench run`` harness per item, with instant scripted models.

Every item goes through ``rules`` (thinker, worker, check-as-verifier) and the ``fixed`` baseline,
graded by a ``number`` check (no subprocess, so the harness itself is what is timed). Peer in the
same run: a bare loop that does the same engine runs and the same grading with no harness
(no results file, no resume bookkeeping, no trace store, no progress). Overhead per item =
(harness time - bare time) / items; the ratio harness / bare is reported too. Also timed: one
``python_tests`` check in the sandbox (what an MBPP item adds to every verifier turn).

    python bench/bench_harness.py [--items 300] [--repeats 3]

Writes bench/results/bench_harness.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from podium.backends import BackendSet
from podium.benchmark import BenchConfig, BenchRunner
from podium.checks import parse_check, run_check
from podium.engine import Engine
from podium.pool import ModelSpec, Pool, PoolConfig
from podium.tasks import Task
from podium.traces.store import Store
from podium.types import Budget

RESULTS = Path(__file__).resolve().parent / "results"


def pool() -> Pool:
    models = [
        ModelSpec(name="planner", backend="scripted", replies=["1. Add."], roles=["thinker"]),
        ModelSpec(name="solver", backend="scripted", replies=["The answer is 42."], roles=["worker"]),
    ]
    return Pool(PoolConfig(name="instant", models=models, defaults={"thinker": "planner", "worker": "solver"}))


def tasks(n: int) -> list[Task]:
    return [
        Task(id=f"t{i}", prompt=f"Question {i}: what is 40 + 2?", check=parse_check({"type": "number", "answer": 42}))
        for i in range(n)
    ]


async def bare(items: list[Task], p: Pool) -> float:
    started = time.perf_counter()
    backends = BackendSet()
    engines = {c: Engine(p, c, backends=backends) for c in ("rules", "fixed:solver")}
    for task in items:
        for name, engine in engines.items():
            result = await engine.run(task.prompt, budget=Budget(max_turns=5), check=task.check)
            await run_check(task.check, result.answer or "")
    return time.perf_counter() - started


async def harness(items: list[Task], p: Pool, folder: Path, with_store: bool) -> float:
    store = Store.open(folder / "podium.db") if with_store else None
    runner = BenchRunner(
        p,
        BenchConfig(coordinators=["rules"], budget=Budget(max_turns=5)),
        folder / "out",
        on_event=store.handler(source="bench") if store else None,
        store=store,
    )
    started = time.perf_counter()
    rows = await runner.run(items, progress=lambda _msg: None)
    elapsed = time.perf_counter() - started
    assert len(rows) == 2 * len(items) and all(r["passed"] for r in rows)
    return elapsed


async def sandbox_check_s(n: int = 5) -> float:
    spec = parse_check({"type": "python_tests", "tests": ["assert f(2) == 4"]})
    times = []
    for _ in range(n):
        started = time.perf_counter()
        result = await run_check(spec, "```python\ndef f(x):\n    return x * 2\n```")
        times.append(time.perf_counter() - started)
        assert result.passed, result.detail
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    items, p = tasks(args.items), pool()
    rows = {"bare": [], "harness": [], "harness+store": []}
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            rows["bare"].append(asyncio.run(bare(items, p)))
            rows["harness"].append(asyncio.run(harness(items, p, Path(tmp) / "a", False)))
            rows["harness+store"].append(asyncio.run(harness(items, p, Path(tmp) / "b", True)))
    best = {k: min(v) for k, v in rows.items()}  # min over repeats: least disturbed by the shared machine
    per_item = {k: v / args.items * 1000 for k, v in best.items()}
    out = {
        "items": args.items,
        "runs_per_item": 2,
        "repeats": args.repeats,
        "seconds": rows,
        "ms_per_item": per_item,
        "harness_overhead_ms_per_item": per_item["harness"] - per_item["bare"],
        "harness_store_overhead_ms_per_item": per_item["harness+store"] - per_item["bare"],
        "ratio_harness_vs_bare": best["harness"] / best["bare"],
        "ratio_harness_store_vs_bare": best["harness+store"] / best["bare"],
        "sandbox_python_tests_check_ms": asyncio.run(sandbox_check_s()) * 1000,
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load": os.getloadavg(),
        },
    }
    print(f"{'variant':<16} {'ms/item':>9} {'vs bare':>8}")
    for k in rows:
        print(f"{k:<16} {per_item[k]:>9.2f} {best[k] / best['bare']:>7.2f}x")
    print(
        f"harness overhead: {out['harness_overhead_ms_per_item']:.2f} ms/item "
        f"({out['harness_store_overhead_ms_per_item']:.2f} with the trace store); "
        f"one sandboxed python_tests check: {out['sandbox_python_tests_check_ms']:.0f} ms; load {os.getloadavg()}"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_harness.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()

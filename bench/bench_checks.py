"""Cost of grading one answer with a python_tests check (sandboxed) vs an unsandboxed subprocess.

Peer, in the same run: the same code and asserts run by ``python -c`` in a plain subprocess (no
rlimits, no namespaces, no uid switch, no cleanup) — the least a grader that runs code must pay.
Also the answer-only checks (exact, regex, number), which run in-process.

    python bench/bench_checks.py [--n 40]

Writes bench/results/checks.md and bench/results/checks.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

from podium.checks import parse_check, run_check
from podium.checks.sandbox import run_python

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"
CODE = "def add(a, b):\n    return a + b\n"
TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(10, 5) == 15"]


async def plain_subprocess() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",
        "-S",
        "-c",
        CODE + "\n".join(TESTS),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert await proc.wait() == 0


async def sandboxed() -> None:
    result = await run_check(parse_check({"type": "python_tests", "tests": TESTS}), CODE)
    assert result.passed


async def timed(fn, n: int) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t)
        print(f"\r{fn.__name__}: {i + 1}/{n}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return out


def summary(xs: list[float]) -> dict:
    xs = sorted(xs)
    return {
        "n": len(xs),
        "median_ms": 1000 * statistics.median(xs),
        "p95_ms": 1000 * xs[int(0.95 * (len(xs) - 1))],
        "mean_ms": 1000 * statistics.fmean(xs),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=40)
    n = parser.parse_args().n
    isolation = (await run_python(CODE, TESTS)).isolation
    rows = {
        "plain subprocess (peer)": summary(await timed(plain_subprocess, n)),
        "python_tests sandbox": summary(await timed(sandboxed, n)),
    }
    answer_only = []
    for spec in (
        {"type": "exact", "answer": "Paris"},
        {"type": "regex", "pattern": "391"},
        {"type": "number", "answer": 18},
    ):
        check = parse_check(spec)
        t = time.perf_counter()
        for _ in range(1000):
            await run_check(check, "Janet makes 9 * 2 = $18 a day.\n#### 18")
        answer_only.append((spec["type"], (time.perf_counter() - t) / 1000 * 1e6))
    ratio = rows["python_tests sandbox"]["median_ms"] / rows["plain subprocess (peer)"]["median_ms"]
    report = {
        "isolation": isolation,
        "load": os.getloadavg(),
        "cpus": os.cpu_count(),
        "rows": rows,
        "answer_only_us": dict(answer_only),
        "sandbox_over_plain_median": ratio,
    }
    lines = ["| grader | n | median ms | p95 ms | mean ms |", "|---|---:|---:|---:|---:|"]
    lines += [
        f"| {k} | {v['n']} | {v['median_ms']:.1f} | {v['p95_ms']:.1f} | {v['mean_ms']:.1f} |" for k, v in rows.items()
    ]
    md = (
        f"# Grading cost per answer\n\nSandbox isolation: `{isolation}`.\n\n"
        + "\n".join(lines)
        + f"\n\nSandbox / plain subprocess (medians): **{ratio:.2f}x**.\n\n"
        + "Answer-only checks (in-process): "
        + ", ".join(f"{k} {us:.1f} µs" for k, us in answer_only)
        + f".\n\nMachine: {os.cpu_count()} CPUs shared with other jobs; load (1/5/15 min) "
        + " / ".join(f"{x:.2f}" for x in report["load"])
        + ".\n"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "checks.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "checks.md").write_text(md)
    print(md)


if __name__ == "__main__":
    asyncio.run(main())

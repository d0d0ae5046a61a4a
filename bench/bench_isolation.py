"""What cancellation-safe upstream I/O costs per call: ``OpenAIBackend.complete`` / ``.stream``
(isolated in their own task, see podium/backends/isolation.py) versus the same calls made directly in
the caller's task (``_read`` / ``_stream``: the previous behaviour), against the same loopback stub
(tests/faults/server.py in its own process), interleaved call by call so machine load hits both alike.

    python bench/bench_isolation.py [--calls 300]

Prints a table (median ms, and the median paired difference with a 95% bootstrap interval) and
writes bench/results/isolation.json and bench/results/isolation.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from podium.backends.openai import OpenAIBackend
from podium.pool import ModelSpec
from podium.types import ChatMessage, CompletionRequest

RESULTS = ROOT / "bench" / "results"
REQUEST = CompletionRequest(messages=[ChatMessage(role="user", content="What is six times seven?")], max_tokens=64)


def bootstrap_ci(diffs: list[float], rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% interval of the median of ``diffs``."""
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(diffs, k=len(diffs))) for _ in range(rounds))
    return medians[int(0.025 * rounds)], medians[int(0.975 * rounds)]


async def timed(call) -> float:
    started = time.perf_counter()
    await call()
    return (time.perf_counter() - started) * 1000


async def measure(url: str, calls: int) -> dict:
    backend = OpenAIBackend(ModelSpec(name="m", backend="openai", base_url=url, model="ok"), httpx.AsyncClient())

    async def drain(stream) -> None:
        async for _ in stream:
            pass

    variants = {
        "complete": {"isolated": lambda: backend.complete(REQUEST), "direct": lambda: backend._read(REQUEST)},
        "stream": {
            "isolated": lambda: drain(backend.stream(REQUEST)),
            "direct": lambda: drain(backend._stream(REQUEST)),
        },
    }
    out: dict = {}
    for kind, pair in variants.items():
        for call in pair.values():  # warm up
            for _ in range(20):
                await call()
        times: dict[str, list[float]] = {"isolated": [], "direct": []}
        for i in range(calls):
            order = ["isolated", "direct"] if i % 2 == 0 else ["direct", "isolated"]
            for name in order:
                times[name].append(await timed(pair[name]))
            if (i + 1) % 100 == 0:
                print(f"  {kind}: {i + 1}/{calls} calls", file=sys.stderr)
        diffs = [a - b for a, b in zip(times["isolated"], times["direct"])]
        low, high = bootstrap_ci(diffs)
        out[kind] = {
            "calls": calls,
            "isolated_median_ms": statistics.median(times["isolated"]),
            "direct_median_ms": statistics.median(times["direct"]),
            "diff_median_ms": statistics.median(diffs),
            "diff_ci95_ms": [low, high],
        }
    await backend.client.aclose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    stub = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "faults" / "server.py")], stdout=subprocess.PIPE, text=True
    )
    try:
        port = int(stub.stdout.readline())  # type: ignore[union-attr]
        load = os.getloadavg()
        results = asyncio.run(measure(f"http://127.0.0.1:{port}/v1", args.calls))
    finally:
        stub.terminate()
    rows = [
        "| call | calls | isolated median ms | direct median ms | paired difference, median ms (95% CI) |",
        "|---|---:|---:|---:|---|",
    ]
    for kind, r in results.items():
        low, high = r["diff_ci95_ms"]
        rows.append(
            f"| {kind} | {r['calls']} | {r['isolated_median_ms']:.3f} | {r['direct_median_ms']:.3f} | "
            f"{r['diff_median_ms']:+.3f} ({low:+.3f} .. {high:+.3f}) |"
        )
    note = f"load average at start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} CPUs"
    table = "\n".join(rows) + f"\n\n{note}\n"
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "isolation.json").write_text(
        json.dumps({"results": results, "loadavg": load, "cpus": os.cpu_count()}, indent=2)
    )
    (RESULTS / "isolation.md").write_text(table)


if __name__ == "__main__":
    main()

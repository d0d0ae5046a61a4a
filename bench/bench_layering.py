"""Did making reliability a stack of backend layers (and runs an async iterator) change podium's
per-call overhead? The overhead benchmark's podium client (bench/bench_overhead.py: ``Engine.run``,
``fixed`` coordinator, one call to a loopback stub) run on two source trees, interleaved.

Each round starts one process per tree (the old tree first in odd rounds, the new one first in even
rounds); each process measures bare httpx calls and podium calls to the same stub, alternating in
blocks, so machine load hits both alike. Overhead = podium's median minus httpx's median in the same
process. The ratio new/old of the pooled median overheads gets a 95% bootstrap interval.

    git worktree add /tmp/old 07d5047
    python bench/bench_layering.py --old /tmp/old/src [--calls 200] [--rounds 3]

Writes bench/results/overhead_layering.json and prints a table (bench/results/overhead_layering.md
is written by hand from it, with the machine's load).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CHILD = """
import asyncio, json, sys
sys.path.insert(0, {bench!r})
from bench_overhead import podium_client, raw_client, timed

async def main(url, calls, stream):
    raw, podium = await raw_client(url, stream), await podium_client(url, stream)
    await timed(raw[0], 20); await timed(podium[0], 20)  # warm up connections, imports, caches
    out = {{"raw": [], "podium": []}}
    for _ in range(calls // 20):
        out["raw"] += await timed(raw[0], 20)
        out["podium"] += await timed(podium[0], 20)
    await raw[1](); await podium[1]()
    return out

url, calls = sys.argv[1], int(sys.argv[2])
print(json.dumps({{mode: asyncio.run(main(url, calls, mode == "streaming")) for mode in ("non-streaming", "streaming")}}))
"""
MICRO = """
import asyncio, json, sys, time, yaml
from podium.engine import Engine
from podium.pool import parse_pool

spec = {{"name": "ok", "backend": "scripted", "replies": ["The answer is 42, and some more text here."], "max_tokens": 64}}
engine = Engine(parse_pool(yaml.safe_dump({{"name": "bench", "models": [spec]}}), "bench"), "fixed")

async def main(runs):
    out = {{}}
    for mode in ("non-streaming", "streaming"):
        for _ in range(100):
            await engine.run("q", stream=mode == "streaming")
        samples = []
        for _ in range(runs):
            t = time.perf_counter()
            await engine.run("q", stream=mode == "streaming")
            samples.append(time.perf_counter() - t)
        out[mode] = samples
    return out

print(json.dumps(asyncio.run(main(int(sys.argv[1])))))
"""


def micro(src: str, runs: int) -> dict[str, list[float]]:
    """Whole ``Engine.run`` calls on a scripted model, in process: podium's own CPU per run, no network."""
    env = {**os.environ, "PYTHONPATH": src, "PODIUM_TRACES": "off", "PODIUM_BREAKER_FILE": ""}
    out = subprocess.run([sys.executable, "-c", MICRO.format(), str(runs)], env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{src}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(src: str, url: str, calls: int) -> dict[str, dict[str, list[float]]]:
    env = {**os.environ, "PYTHONPATH": src, "PODIUM_TRACES": "off", "PODIUM_BREAKER_FILE": ""}
    code = CHILD.format(bench=str(ROOT / "bench"))
    out = subprocess.run([sys.executable, "-c", code, url, str(calls)], env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{src}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def overhead_ms(samples: dict[str, list[float]]) -> float:
    return (statistics.median(samples["podium"]) - statistics.median(samples["raw"])) * 1e3


def bootstrap_ratio(new: dict[str, list[float]], old: dict[str, list[float]], n: int = 2000) -> tuple[float, float]:
    rng, ratios = random.Random(0), []
    for _ in range(n):
        pick = {k: {s: rng.choices(v[s], k=len(v[s])) for s in v} for k, v in (("new", new), ("old", old))}
        base = overhead_ms(pick["old"])
        if base > 0:
            ratios.append(overhead_ms(pick["new"]) / base)
    ratios.sort()
    return ratios[int(0.025 * len(ratios))], ratios[int(0.975 * len(ratios)) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="the old tree's src/ directory")
    parser.add_argument("--new", default=str(ROOT / "src"), help="the new tree's src/ directory")
    parser.add_argument("--calls", type=int, default=200, help="calls per client per process and mode")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--micro", type=int, default=0, help="instead: N in-process runs on a scripted model per process"
    )
    args = parser.parse_args()
    if args.micro:
        return micro_main(args)
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_overhead import start_stub

    proc, port = start_stub()
    url = f"http://127.0.0.1:{port}/v1"
    pooled: dict[str, dict[str, dict[str, list[float]]]] = {}
    rounds: list[dict[str, object]] = []
    started, load_before = time.time(), os.getloadavg()
    try:
        for r in range(args.rounds):
            order = [("old", args.old), ("new", args.new)] if r % 2 == 0 else [("new", args.new), ("old", args.old)]
            row: dict[str, object] = {"round": r + 1, "order": [name for name, _ in order]}
            for name, src in order:
                data = measure(src, url, args.calls)
                for mode, samples in data.items():
                    row[f"{name} {mode}"] = round(overhead_ms(samples), 3)
                    slot = pooled.setdefault(name, {}).setdefault(mode, {"raw": [], "podium": []})
                    for key in ("raw", "podium"):
                        slot[key] += samples[key]
            rounds.append(row)
            done = time.time() - started
            print(
                f"round {r + 1}/{args.rounds} done, ETA {done / (r + 1) * (args.rounds - r - 1):.0f}s", file=sys.stderr
            )
    finally:
        proc.terminate()
        proc.wait(5)
    report: dict[str, object] = {
        "machine": {"cpus": os.cpu_count(), "load_avg_before": load_before, "load_avg_after": os.getloadavg()},
        "calls_per_process_and_mode": args.calls,
        "rounds": rounds,
        "modes": {},
    }
    lines = [
        "| mode | raw httpx median (ms) | old overhead (ms) | new overhead (ms) | new / old | 95% interval |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for mode in ("non-streaming", "streaming"):
        old, new = pooled["old"][mode], pooled["new"][mode]
        o, n = overhead_ms(old), overhead_ms(new)
        lo, hi = bootstrap_ratio(new, old)
        raw = statistics.median(old["raw"] + new["raw"]) * 1e3
        report["modes"][mode] = {"old_ms": o, "new_ms": n, "ratio": n / o, "ratio_95": [lo, hi], "raw_ms": raw}  # type: ignore[index]
        lines.append(f"| {mode} | {raw:.2f} | {o:.3f} | {n:.3f} | {n / o:.2f} | [{lo:.2f}, {hi:.2f}] |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "overhead_layering.json").write_text(json.dumps(report, indent=2))
    print("\n".join(lines))
    for row in rounds:
        print(row)


def micro_main(args: argparse.Namespace) -> None:
    pooled: dict[str, dict[str, list[float]]] = {"old": {}, "new": {}}
    load_before = os.getloadavg()
    for r in range(args.rounds):
        order = [("old", args.old), ("new", args.new)] if r % 2 == 0 else [("new", args.new), ("old", args.old)]
        for name, src in order:
            for mode, xs in micro(src, args.micro).items():
                pooled[name].setdefault(mode, []).extend(xs)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    lines = [
        "| mode (scripted, in process) | old median (us) | new median (us) | new / old | 95% interval |",
        "|---|---:|---:|---:|---|",
    ]
    report: dict[str, object] = {"load_avg_before": load_before, "load_avg_after": os.getloadavg(), "runs": args.micro}
    rng = random.Random(0)
    for mode in ("non-streaming", "streaming"):
        old, new = pooled["old"][mode], pooled["new"][mode]
        ratio = statistics.median(new) / statistics.median(old)
        boots = sorted(
            statistics.median(rng.choices(new, k=len(new))) / statistics.median(rng.choices(old, k=len(old)))
            for _ in range(1000)
        )
        lo, hi = boots[25], boots[974]
        report[mode] = {
            "old_us": statistics.median(old) * 1e6,
            "new_us": statistics.median(new) * 1e6,
            "ratio": ratio,
            "ratio_95": [lo, hi],
        }
        lines.append(
            f"| {mode} | {statistics.median(old) * 1e6:.0f} | {statistics.median(new) * 1e6:.0f} | {ratio:.2f} | [{lo:.2f}, {hi:.2f}] |"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "overhead_layering_micro.json").write_text(json.dumps(report, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

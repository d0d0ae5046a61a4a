"""The trace store on the engine's path: scripted 3-turn runs per second without a store, with the
store written synchronously in the event loop (what ``Store.handler()`` does), with the
background batched writer thread (``Store.handler(background=True)``, podium.traces.writer) and
with the writer process (``Store.handler(background="process")``, podium.traces.writer_process).

Each run: the ``rules`` coordinator, thinker -> worker -> verifier (ACCEPT), instant scripted
models, so what is timed is the engine and the store. Variants are interleaved within each round
(order rotated); ratios are taken within a round, then min/median/max over rounds. The background
variants' times include their final flush (every run committed before the clock stops). The writer
process is started before the clock (a server starts it once); its start-up time is reported apart.

Every measurement runs in a fresh Python process (after 100 warm-up runs there), so variants do not
share caches or a heap. ``--before-src DIR`` (e.g. ``git archive`` of an earlier commit's ``src/``)
adds that tree's background writers to every round: code before and after share the rounds, and
every ratio is to this tree's engine without a store in the same round.

    python bench/bench_engine_store.py [--runs 10000] [--concurrency 10] [--rounds 3] [--before-src DIR]

Writes bench/results/engine_store.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from podium.engine import Engine
from podium.pool import ModelSpec, Pool, PoolConfig
from podium.traces.store import Store

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = ["no store", "store (sync, before)", "store (background writer)", "store (writer process)"]
BEFORE = {"before: background writer": VARIANTS[2], "before: writer process": VARIANTS[3]}
RATIOS = {
    "ratio_sync_store_vs_none": VARIANTS[1],
    "ratio_background_store_vs_none": VARIANTS[2],
    "ratio_process_store_vs_none": VARIANTS[3],
    "ratio_before_background_vs_none": "before: background writer",
    "ratio_before_process_vs_none": "before: writer process",
}
STARTUP: list[float] = []  # the writer process's start-up times (s)
COSTS: dict[str, list[tuple[float, float, float]]] = {}  # variant: (CPU ms/run here, in the writer process, runs/batch)


def pool() -> Pool:
    models = [
        ModelSpec(name="planner", backend="scripted", replies=["1. Add the numbers."], roles=["thinker"]),
        ModelSpec(name="solver", backend="scripted", replies=["The answer is 42."], roles=["worker"]),
        ModelSpec(name="judge", backend="scripted", replies=["ACCEPT: correct."], roles=["verifier"]),
    ]
    defaults = {"thinker": "planner", "worker": "solver", "verifier": "judge"}
    return Pool(PoolConfig(name="instant", models=models, defaults=defaults))


async def runs_per_s(variant: str, runs: int, concurrency: int, db: Path) -> tuple[float, int]:
    """Runs/s of ``variant`` (every run committed); also notes its CPU per run and batch size in COSTS."""
    engine = Engine(pool(), "rules")
    handler: Any = None
    child = None
    if variant != "no store":
        kind = {VARIANTS[2]: "thread", VARIANTS[3]: "process"}.get(variant, False)
        handler = Store.open(db).handler(source="bench", background=kind)  # type: ignore[arg-type]
        if kind == "process":
            began = time.perf_counter()
            assert handler.writer.start()
            STARTUP.append(time.perf_counter() - began)
            child = handler.writer._proc.pid
    left = [runs]
    turns = [0]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            result = await engine.run("What is 40 + 2? Explain the steps.", on_event=handler)
            turns[0] += len(result.turns)

    child_cpu = _cpu_s(child)
    cpu, started = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    if hasattr(handler, "flush"):
        handler.flush()  # every run committed
    elapsed, cpu, child_cpu = time.perf_counter() - started, time.process_time() - cpu, _cpu_s(child) - child_cpu
    batches = getattr(getattr(handler, "writer", None), "batches", 0)
    if hasattr(handler, "close"):
        handler.close()
    await engine.aclose()
    COSTS.setdefault(variant, []).append((cpu / runs * 1e3, child_cpu / runs * 1e3, runs / batches if batches else 0))
    return runs / elapsed, turns[0]


def _cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) of process ``pid`` so far (0 for None)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(variant: str, args: argparse.Namespace, db: Path) -> float:
    """Runs/s of ``variant`` in a fresh process (the ``before:`` ones on ``--before-src``); notes its costs."""
    src = args.before_src if variant in BEFORE else str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, __file__, "--child", BEFORE.get(variant, variant), "--runs", str(args.runs)]
    cmd += ["--concurrency", str(args.concurrency), "--out", str(db)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout.splitlines()[-1]
    got = json.loads(out)
    COSTS.setdefault(variant, []).append(tuple(got["costs"]))
    if got["startup"] is not None and variant == VARIANTS[3]:
        STARTUP.append(got["startup"])
    return float(got["rate"])


def child(variant: str, runs: int, concurrency: int, db: Path) -> None:
    """One measurement (``--child``): warm-up, then ``runs`` runs; prints its rate and costs as JSON."""
    asyncio.run(runs_per_s("no store", 100, concurrency, db.with_suffix(".warm.db")))  # imports, caches
    COSTS.clear()
    rate, turns = asyncio.run(runs_per_s(variant, runs, concurrency, db))
    assert turns == 3 * runs, turns
    print(json.dumps({"rate": rate, "costs": COSTS[variant][0], "startup": STARTUP[0] if STARTUP else None}))


def stats(xs: list[float]) -> dict[str, float]:
    return {"min": round(min(xs), 3), "median": round(statistics.median(xs), 3), "max": round(max(xs), 3)}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 10,000: on a machine where the engine does 4,000-5,000 runs/s, 2,000 runs took half a second and
    # the background writers' fixed end (the last batch's linger and commit before the clock stops)
    # weighed up to a fifth of it (session 12: writer process 0.77x at 2,000 runs, 0.89x at 10,000)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before-src", help="another tree's src/ whose background writers join every round")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(RESULTS / "engine_store.json"))
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.runs, args.concurrency, Path(args.out))
    if args.before_src and not (Path(args.before_src) / "podium" / "traces" / "store.py").is_file():
        parser.error(f"--before-src {args.before_src}: no podium/traces/store.py there (give a tree's src/)")
    variants = VARIANTS + (list(BEFORE) if args.before_src else [])
    load_start = uptime()
    rounds: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            row: dict[str, float] = {}
            for i, variant in enumerate(variants[r % len(variants) :] + variants[: r % len(variants)]):
                row[variant] = measure(variant, args, Path(tmp) / f"{r}-{i}.db")
            rounds.append(row)
            print(
                f"round {r + 1}/{args.rounds}: " + ", ".join(f"{v} {row[v]:.0f} runs/s" for v in variants), flush=True
            )
    report = summarise(args, variants, rounds, load_start)
    text = table(args, variants, report)
    print(text)
    out = Path(args.out)
    out.write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text(
        "# Engine with and without the trace store (bench/bench_engine_store.py)\n\n" + text + "\n"
    )


def summarise(
    args: argparse.Namespace, variants: list[str], rounds: list[dict[str, float]], load_start: str
) -> dict[str, Any]:
    child_cpu = {v: stats([c[1] for c in COSTS[v]]) for v in variants if "writer process" in v}
    return {
        "runs": args.runs,
        "concurrency": args.concurrency,
        "turns_per_run": 3,
        "before_src": args.before_src,
        "rounds": rounds,
        "runs_per_s": {v: stats([row[v] for row in rounds]) for v in variants},
        **{key: stats([row[v] / row[VARIANTS[0]] for row in rounds]) for key, v in RATIOS.items() if v in variants},
        "writer_process_startup_s": stats(STARTUP),
        "cpu_ms_per_run_here": {v: stats([c[0] for c in COSTS[v]]) for v in variants},
        "cpu_ms_per_run_writer_process": child_cpu,
        "runs_per_batch": {v: stats([c[2] for c in COSTS[v]]) for v in variants[2:]},
        # no store's CPU per run over the variant's (this process + the writer process), same round:
        # the ratio when the machine has no core to spare, whichever process does the work
        "cpu_ratio_vs_none": {
            v: stats([n[0] / (c[0] + c[1]) for n, c in zip(COSTS[VARIANTS[0]], COSTS[v], strict=True)])
            for v in variants
        },
        "target": "store on >= 0.8 of store off",
        "load": {"start": load_start, "end": uptime()},
    }


def table(args: argparse.Namespace, variants: list[str], report: dict[str, Any]) -> str:
    lines = [
        f"Load at start: `{report['load']['start']}`  ",
        f"Load at end: `{report['load']['end']}`",
        "",
        f"{args.runs} scripted 3-turn runs (rules), {args.concurrency} concurrent, {args.rounds} rounds, each "
        "variant in a fresh process; median (min–max)."
        + (f" `before:` rows: the code in `{args.before_src}`, same rounds." if args.before_src else ""),
        "",
        "| variant | runs/s | × no store (same round) | CPU ms/run, this process | in the writer process "
        "| × no store by CPU (same round) | runs/batch |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for i, v in enumerate(variants):
        s = report["runs_per_s"][v]
        ratio = "1" if i == 0 else _fmt(report[next(k for k, x in RATIOS.items() if x == v)])
        here = _fmt(report["cpu_ms_per_run_here"][v])
        child_cpu = (
            _fmt(report["cpu_ms_per_run_writer_process"][v]) if v in report["cpu_ms_per_run_writer_process"] else ""
        )
        batch = f"{report['runs_per_batch'][v]['median']:.0f}" if v in report["runs_per_batch"] else ""
        by_cpu = _fmt(report["cpu_ratio_vs_none"][v])
        lines.append(
            f"| {v} | {s['median']:.0f} ({s['min']:.0f}–{s['max']:.0f}) | {ratio} | {here} | {child_cpu} "
            f"| {by_cpu} | {batch} |"
        )
    lines += [
        "",
        f"Writer process start-up (before the clock): {_fmt(report['writer_process_startup_s'])} s.",
        "",
        "× no store by CPU: the engine's CPU per run without a store over the variant's CPU per run (this "
        "process plus the writer process), in the same round: the throughput ratio on a machine with no "
        "core to spare, and far less sensitive to the load than runs/s.",
    ]
    return "\n".join(lines)


def _fmt(s: dict[str, float]) -> str:
    return f"{s['median']:.2f} ({s['min']:.2f}–{s['max']:.2f})"


if __name__ == "__main__":
    main()

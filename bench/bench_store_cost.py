"""The CPU cost of storing one run's trace: in-process ``Store.record_many`` (batches of 50, what the
server's writer thread does) and the writer process's side (runs decoded from their wire form, then
stored in batches of 100: ``writer_child.child_main`` fed the frames its parent writes, in a fresh process
that imports what the writer process imports, after a warm-up batch), for 1-turn pass-through runs (what the server
stores per request) and 3-turn engine runs (bench_engine_store's scripted rules runs).

Peer, in the same run: the same measurements on another tree's ``src/`` (``--before-src DIR``, e.g.
``git archive`` of an earlier commit). Each measurement runs in a fresh Python process (tree code
first on the path), after a warm-up batch, into a fresh database; rounds interleave the trees.
Reported: CPU ms per stored run (``time.process_time``, load-insensitive enough), min/median/max
over rounds, and after / before within each round.

    python bench/bench_store_cost.py [--runs 2000] [--rounds 3] [--before-src DIR] [--profile CASE]

``--profile 1-turn:in-process`` (or ``3-turn:child`` ...) prints a cProfile of that case instead.
Writes bench/results/store_cost.json and .md.

``--split [--batch N]``: where the writer process's CPU goes, by part (decode, scrub check, rows,
SQLite's statements, its commit), in batches of N runs (default 100; ``podium serve``'s batches at 50
clients hold about 15): bench/results/store_cost_split_batchN.{md,json}.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
CASES = ["1-turn:in-process", "1-turn:child", "3-turn:in-process", "3-turn:child"]
BATCH = {"in-process": 50, "child": 100}
FAKE_KEY = "sk-bench-" + "0123456789abcdef" * 3  # a server has a key in its environment: scrubbing looks for it


def engine_runs(n: int) -> list[Any]:
    """``n`` scripted 3-turn rules runs (thinker, worker, verifier ACCEPT), as bench_engine_store makes."""
    from podium.engine import Engine
    from podium.pool import ModelSpec, Pool, PoolConfig

    models = [
        ModelSpec(name="planner", backend="scripted", replies=["1. Add the numbers."], roles=["thinker"]),
        ModelSpec(name="solver", backend="scripted", replies=["The answer is 42."], roles=["worker"]),
        ModelSpec(name="judge", backend="scripted", replies=["ACCEPT: correct."], roles=["verifier"]),
    ]
    defaults = {"thinker": "planner", "worker": "solver", "verifier": "judge"}
    engine = Engine(Pool(PoolConfig(name="instant", models=models, defaults=defaults)), "rules")

    async def go() -> list[Any]:
        out = [await engine.run(f"What is 40 + {i}? Explain the steps.") for i in range(n)]
        await engine.aclose()
        return out

    return asyncio.run(go())


def passthrough_runs(n: int) -> list[Any]:
    """``n`` 1-turn pass-through runs shaped as the server's (``service._result``) are."""
    from podium.types import ChatMessage, Role, RunResult, RunStatus, Turn

    out = []
    for i in range(n):
        question = f"Request {i}: summarise the attached paragraph in two sentences. " + "Lorem ipsum dolor. " * 12
        messages = [
            ChatMessage(role="system", content="You are a concise assistant."),
            ChatMessage(role="user", content=question),
        ]
        answer = "The paragraph says the usual placeholder things. " * 5
        turn = Turn(
            turn=1,
            role=Role.WORKER,
            model=f"model-{i % 4}",
            provider="openai",
            reason="pass-through",
            messages=messages,
            output=answer,
            prompt_tokens=180,
            completion_tokens=60,
            cost_usd=2.4e-4,
            latency_s=0.35,
        )
        policy = {"name": "passthrough", "chain": [f"model-{i % 4}", "fallback"], "max_retries": 2}
        out.append(
            RunResult(
                query=question,
                answer=answer,
                status=RunStatus.ANSWERED,
                reason=f"pass-through to model-{i % 4}",
                pool="api",
                coordinator="passthrough",
                policy=policy,
                turns=[turn],
                latency_s=0.36,
            )
        )
    return out


def make_runs(kind: str, n: int) -> list[Any]:
    return engine_runs(n) if kind == "3-turn" else passthrough_runs(n)


def in_process(runs: list[Any], db: Path) -> Callable[[], None]:
    """What stores ``runs`` with ``record_many`` in batches of 50 (the part that is timed)."""
    from podium.traces.store import Store

    store = Store.open(db)
    batches = [runs[i : i + BATCH["in-process"]] for i in range(0, len(runs), BATCH["in-process"])]
    return lambda: [store.record_many([(r, "api", None) for r in b]) for b in batches]  # type: ignore[return-value]


def child_input(runs: list[Any], db: Path) -> bytes:
    """The writer process's stdin as its parent writes it for ``runs`` (encoded there), batches of 100."""
    from podium.scrub import secrets_pattern
    from podium.traces._batch import encode
    from podium.traces.writer_child import pack

    size = BATCH["child"]
    frames = [pack(("open", str(db), "full")), pack(("secrets", secrets_pattern()))]
    for k in range(0, len(runs), size):
        frames.append(pack(("batch", k, [(encode(r), "api", None) for r in runs[k : k + size]])))
    return b"".join(frames)


CHILD = """
import io, struct, sys, time
from podium.traces.writer_child import child_main
data = sys.stdin.buffer.read()
size = struct.unpack("!Q", data[:8])[0]
child_main(io.BytesIO(data[8 : 8 + size]), io.BytesIO())  # warm-up, its own database
cpu = time.process_time()
child_main(io.BytesIO(data[8 + size :]), io.BytesIO())
print(time.process_time() - cpu)
"""


def child_cpu_s(warm: bytes, data: bytes) -> float:
    """CPU seconds a writer process spends on ``data`` (after ``warm``): ``writer_child.child_main``
    in a fresh process that imports what ``python -m podium.traces.writer_child`` imports."""
    stdin = struct.pack("!Q", len(warm)) + warm + data
    out = subprocess.run([sys.executable, "-c", CHILD], input=stdin, capture_output=True, check=True).stdout
    return float(out.decode().split()[-1])


def child(case: str, n: int, profile: bool) -> None:
    """One measurement: prints CPU ms per run as JSON (or a profile)."""
    kind, mode = case.split(":")
    runs = make_runs(kind, n + 100)
    with tempfile.TemporaryDirectory() as tmp:
        if mode == "child":
            if profile:
                data = child_input(runs[100:], Path(tmp) / "bench.db")
                cProfile.runctx("child_main(io.BytesIO(data), io.BytesIO())", globals(), locals(), sort="tottime")
                return
            warm, data = child_input(runs[:100], Path(tmp) / "warm.db"), child_input(runs[100:], Path(tmp) / "bench.db")
            print(json.dumps({"cpu_ms_per_run": child_cpu_s(warm, data) / n * 1e3}))
            return
        in_process(runs[:100], Path(tmp) / "warm.db")()  # imports, caches, statements
        timed = in_process(runs[100:], Path(tmp) / "bench.db")
        if profile:
            prof = cProfile.Profile()
            prof.runcall(timed)
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
            print(out.getvalue())
            return
        cpu = time.process_time()
        timed()
        cpu = time.process_time() - cpu
    print(json.dumps({"cpu_ms_per_run": cpu / n * 1e3}))


def split(kind: str, n: int, batch: int) -> None:
    """Where the writer process's CPU goes for ``n`` runs in batches of ``batch`` (``--split-child``):
    decoding, the scrub check, building the rows, SQLite's statements and its commit; prints µs per
    run as JSON."""
    import gc

    from podium.scrub import _may_need_scrub, secrets_pinned
    from podium.traces._batch import Rows, decode, encode
    from podium.traces.store import Store

    blobs = [encode(r) for r in make_runs(kind, n + 100)]
    gc.collect()
    gc.freeze()  # both trees alike: the parts, not the collector (the writer process now freezes too)
    took = dict.fromkeys(["decode", "scrub check", "rows", "statements", "commit"], 0.0)
    timed = 0
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "split.db")
        for start in range(0, n + 100, batch):
            t0 = time.process_time()
            items = [(decode(b), "api", None) for b in blobs[start : start + batch]]
            t1 = time.process_time()
            for (_, text), _, _ in items:
                _may_need_scrub(text or "")
            t2 = time.process_time()
            with secrets_pinned(None):
                rows = Rows(items, "full")  # (its own scrub check again: subtracted below)
            t3 = time.process_time()
            with store._write() as conn:
                rows.write(conn)
                t4 = time.process_time()
            t5 = time.process_time()  # the commit (WAL frames written; a checkpoint now and then)
            if start >= 100:  # after the warm-up runs
                timed += len(items)
                for key, spent in zip(took, (t1 - t0, t2 - t1, t3 - t2 - (t2 - t1), t4 - t3, t5 - t4)):
                    took[key] += spent
    print(json.dumps({k: v / timed * 1e6 for k, v in took.items()}))


def measure(case: str, src: str, n: int) -> float:
    env = {**os.environ, "PYTHONPATH": src, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "OPENAI_API_KEY": FAKE_KEY}
    cmd = [sys.executable, __file__, "--child", case, "--runs", str(n)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout.splitlines()[-1]
    return float(json.loads(out)["cpu_ms_per_run"])


def stats(xs: list[float]) -> dict[str, float]:
    return {"min": min(xs), "median": statistics.median(xs), "max": max(xs)}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before-src", help="another tree's src/, measured in the same rounds")
    parser.add_argument("--profile", help="print a cProfile of one case (e.g. 3-turn:child) and stop")
    parser.add_argument("--split", action="store_true", help="where the writer process's CPU goes, per tree")
    parser.add_argument(
        "--batch", type=int, default=BATCH["child"], help="--split: runs per batch (the server's are often ~15)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--split-child", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(RESULTS / "store_cost.json"))
    args = parser.parse_args()
    if args.split_child:
        split(args.split_child, args.runs, args.batch)
        return
    if args.child or args.profile:
        child(args.child or args.profile, args.runs, bool(args.profile))
        return
    here = str(Path(__file__).resolve().parents[1] / "src")
    trees = {"after": here, **({"before": args.before_src} if args.before_src else {})}
    if args.split:
        split_report(args, trees)
        return
    load_start, began = uptime(), time.perf_counter()
    got: dict[str, dict[str, list[float]]] = {t: {c: [] for c in CASES} for t in trees}
    total = args.rounds * len(trees) * len(CASES)
    for r in range(args.rounds):
        for case in CASES:
            for tree in list(trees)[:: 1 if r % 2 == 0 else -1]:
                got[tree][case].append(measure(case, trees[tree], args.runs))
                done = sum(len(x) for t in got.values() for x in t.values())
                eta = (time.perf_counter() - began) / done * (total - done)
                print(f"round {r + 1} {case} {tree}: {got[tree][case][-1]:.3f} ms/run (ETA {eta:.0f} s)", flush=True)
    report: dict[str, Any] = {
        "runs": args.runs,
        "rounds": args.rounds,
        "before_src": args.before_src,
        "load_start": load_start,
        "load_end": uptime(),
        "cpu_ms_per_run": {t: {c: stats(v) for c, v in cs.items()} for t, cs in got.items()},
        "raw": got,
    }
    if "before" in got:
        ratios = {c: [a / b for a, b in zip(got["after"][c], got["before"][c])] for c in CASES}
        report["after_over_before"] = {c: stats(v) for c, v in ratios.items()}
    out = Path(args.out)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(table(report) + "\n")
    print(table(report))


def split_report(args: argparse.Namespace, trees: dict[str, str]) -> None:
    """``--split``: each tree's writer-process CPU by part, min over ``--rounds`` (interleaved)."""
    load = uptime()
    got: dict[str, list[dict[str, float]]] = {}
    for _ in range(args.rounds):
        for kind in ("1-turn", "3-turn"):
            for tree, src in trees.items():
                env = {
                    **os.environ,
                    "PYTHONPATH": src,
                    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                    "OPENAI_API_KEY": FAKE_KEY,
                }
                cmd = [
                    sys.executable,
                    __file__,
                    "--split-child",
                    kind,
                    "--runs",
                    str(args.runs),
                    "--batch",
                    str(args.batch),
                ]
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout.splitlines()[-1]
                got.setdefault(f"{kind} {tree}", []).append(json.loads(out))
    lines = [
        "# Where the writer process's CPU goes (bench/bench_store_cost.py --split)",
        "",
        f"Load at start: `{load}`  ",
        f"Load at end: `{uptime()}`",
        "",
        f"{args.runs} runs, batches of {args.batch}, µs per run, min over {args.rounds} rounds (each part's own min)."
        + (f" before: `{args.before_src}`." if args.before_src else ""),
        "",
        "| runs, tree | decode | scrub check | rows | SQLite statements | SQLite commit | total |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, samples in got.items():
        parts = {k: min(s[k] for s in samples) for k in samples[0]}
        lines.append(
            f"| {name} | " + " | ".join(f"{v:.1f}" for v in parts.values()) + f" | {sum(parts.values()):.1f} |"
        )
    text = "\n".join(lines) + "\n"
    stem = f"store_cost_split_batch{args.batch}"  # (store_cost_split.md: session 7's, batches of 100)
    (RESULTS / f"{stem}.md").write_text(text)
    (RESULTS / f"{stem}.json").write_text(json.dumps(got, indent=2) + "\n")
    print(text)


def table(report: dict[str, Any]) -> str:
    def fmt(s: dict[str, float]) -> str:
        return f"{s['median']:.3f} ({s['min']:.3f}–{s['max']:.3f})"

    lines = [
        "# CPU cost of storing one run (bench/bench_store_cost.py)",
        "",
        f"Load at start: `{report['load_start']}`  ",
        f"Load at end: `{report['load_end']}`",
        "",
        f"{report['runs']} runs per measurement, {report['rounds']} rounds, each in a fresh process; "
        "CPU ms per stored run, median (min–max). in-process: `record_many` in batches of 50; child: the "
        "writer process's loop (frame read, runs decoded, `write_batch`) in batches of 100."
        + (f" before: `{report['before_src']}`." if report.get("before_src") else ""),
        "",
        "| case | after | before | after / before (same round) |",
        "|---|---:|---:|---:|",
    ]
    per = report["cpu_ms_per_run"]
    for case in CASES:
        before = fmt(per["before"][case]) if "before" in per else ""
        ratio = fmt(report["after_over_before"][case]) if "after_over_before" in report else ""
        lines.append(f"| {case} | {fmt(per['after'][case])} | {before} | {ratio} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

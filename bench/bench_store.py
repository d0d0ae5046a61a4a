"""Trace store cost: how long storing a run takes, alone and with concurrent writer processes, and
how fast listing, one run, and per-model stats read back.

Peer, in the same run: appending the same run as one JSON line to a file (no schema, no index,
no transaction) — the cheapest trace log there is. Ratios are store / peer.

    python bench/bench_store.py [--runs 2000] [--procs 4]

Writes bench/results/store.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import tempfile
import time
from pathlib import Path

from podium.traces.reports import model_stats
from podium.traces.store import Store
from podium.types import ChatMessage, Role, RunResult, RunStatus, Turn, Verdict

RESULTS = Path(__file__).resolve().parent / "results"


def sample_run(i: int) -> RunResult:
    """A realistic 3-turn run with ~1 KB of prompt text per turn."""
    question = f"Question {i}: " + "explain the trade-offs of this design in detail. " * 8
    msgs = [ChatMessage(role="user", content=question + " context " * 40)]
    turns = [
        Turn(
            turn=1,
            role=Role.THINKER,
            model=f"m{i % 5}",
            region="eu",
            messages=msgs,
            output="1. plan " * 20,
            prompt_tokens=300,
            completion_tokens=60,
            cost_usd=1e-4,
            latency_s=0.4,
        ),
        Turn(
            turn=2,
            role=Role.WORKER,
            model=f"m{(i + 1) % 5}",
            region="us",
            messages=msgs,
            output="answer " * 60,
            prompt_tokens=360,
            completion_tokens=120,
            cost_usd=3e-4,
            latency_s=1.1,
        ),
        Turn(
            turn=3,
            role=Role.VERIFIER,
            model=f"m{(i + 2) % 5}",
            region="eu",
            messages=msgs,
            output="ACCEPT: fine",
            verdict=Verdict.ACCEPT,
            prompt_tokens=500,
            completion_tokens=4,
            cost_usd=5e-5,
            latency_s=0.2,
        ),
    ]
    return RunResult(
        query=question, answer="answer " * 60, status=RunStatus.ACCEPTED, pool="bench", coordinator="rules", turns=turns
    )


def time_each(fn, items) -> list[float]:
    out = []
    for item in items:
        t = time.perf_counter()
        fn(item)
        out.append(time.perf_counter() - t)
    return out


def jsonl_writer(path: Path):
    def write(result: RunResult) -> None:
        with path.open("a") as f:
            f.write(json.dumps(result.model_dump(mode="json")) + "\n")

    return write


def _writer(args: tuple[str, str, int, int, float]) -> tuple[float, float]:
    """Wait for the common start time, write ``n`` runs; return (start, end) wall-clock times."""
    kind, path, start, n, go = args
    runs = [sample_run(i) for i in range(start, start + n)]
    write = Store.open(path).record if kind == "store" else jsonl_writer(Path(path))
    time.sleep(max(0.0, go - time.time()))
    began = time.time()
    for run in runs:
        write(run)
    return began, time.time()


def concurrent(kind: str, path: str, procs: int, per_proc: int) -> float:
    """Runs stored per second with ``procs`` writer processes writing at the same time."""
    if kind == "store":
        Store.open(path)
    with mp.get_context("spawn").Pool(procs) as pool:
        go = time.time() + 3.0  # all workers started and imported by then
        spans = pool.map(_writer, [(kind, path, k * per_proc, per_proc, go) for k in range(procs)])
    return procs * per_proc / (max(e for _, e in spans) - min(b for b, _ in spans))


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--procs", type=int, default=4)
    args = parser.parse_args()
    runs = [sample_run(i) for i in range(args.runs)]
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "bench.db")
        store_lat = time_each(store.record, runs)
        jsonl_lat = time_each(jsonl_writer(Path(tmp) / "bench.jsonl"), runs)
        reads = {
            "ls_50_ms": 1000 * statistics.median(time_each(lambda _: store.runs(limit=50), range(20))),
            "ls_model_filter_ms": 1000
            * statistics.median(time_each(lambda _: store.runs(model="m3", limit=50), range(20))),
            "show_run_ms": 1000 * statistics.median(time_each(lambda r: store.run(r.run_id), runs[:50])),
            "stats_all_ms": 1000 * statistics.median(time_each(lambda _: model_stats(store), range(3))),
        }
        per = args.runs // args.procs
        store_conc = concurrent("store", str(Path(tmp) / "conc.db"), args.procs, per)
        jsonl_conc = concurrent("jsonl", str(Path(tmp) / "conc.jsonl"), args.procs, per)
        db_bytes = sum(p.stat().st_size for p in Path(tmp).glob("bench.db*"))
        jsonl_bytes = (Path(tmp) / "bench.jsonl").stat().st_size
    result = {
        "runs": args.runs,
        "turns_per_run": 3,
        "procs": args.procs,
        "record_ms_p50": 1000 * statistics.median(store_lat),
        "record_ms_p99": 1000 * pct(store_lat, 99),
        "jsonl_ms_p50": 1000 * statistics.median(jsonl_lat),
        "jsonl_ms_p99": 1000 * pct(jsonl_lat, 99),
        "concurrent_runs_per_s": store_conc,
        "jsonl_concurrent_runs_per_s": jsonl_conc,
        "bytes_per_run": db_bytes / args.runs,
        "jsonl_bytes_per_run": jsonl_bytes / args.runs,
        **reads,
    }
    rows = [
        ("record one run, p50 (ms)", result["record_ms_p50"], result["jsonl_ms_p50"]),
        ("record one run, p99 (ms)", result["record_ms_p99"], result["jsonl_ms_p99"]),
        (f"{args.procs} writer processes (runs/s)", store_conc, jsonl_conc),
        ("bytes per run", result["bytes_per_run"], result["jsonl_bytes_per_run"]),
    ]
    print(f"{'metric':<32} {'sqlite store':>13} {'jsonl peer':>11} {'ratio':>7}")
    for name, mine, peer in rows:
        print(f"{name:<32} {mine:>13.2f} {peer:>11.2f} {mine / peer:>7.2f}")
    print(
        f"reads on {args.runs} runs: "
        + ", ".join(f"{k} {v:.2f}" for k, v in reads.items())
        + " (jsonl has no index: a read scans the file)"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "store.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

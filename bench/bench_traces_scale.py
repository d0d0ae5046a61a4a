"""Trace analysis as the store grows: ``traces stats`` and ``traces ls --model`` at 50k and 100k runs.

Fills a fresh store with synthetic 3-turn runs (5 models, ~10% failed calls, verifier verdicts)
through ``Store.record_many``, then, at each size, times in a fresh subprocess each:

* ``stats (python, before)``: the former ``model_stats`` (every turn row loaded, grouped in Python);
* ``stats (sql, before: GROUP BY over turns)``: the former SQL stats (one GROUP BY over every turn
  and its run, latencies streamed), on a copy of the store reverted to before ``0004_run_models``;
* ``stats (sql)``: ``podium.traces.reports.model_stats`` (one GROUP BY over ``run_models``' covering
  index, percentiles read by rank);
* ``migrate to 0004``: opening that reverted copy, which applies ``0004_run_models`` (the backfill
  and its indexes);
* ``ls --model``: ``Store.runs(model=..., limit=20)``; ``ls``: ``Store.runs(limit=20)``.

Peak memory is the subprocess's peak RSS minus that of the same subprocess doing nothing but
opening the store. Repeats ``--repeats`` times: min/median/max. Both stats agree (checked).

    python bench/bench_traces_scale.py [--sizes 50000 100000] [--repeats 3]

Writes bench/results/traces_scale.json and .md.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from podium.traces.store import Store
from podium.types import ChatMessage, Role, RunResult, RunStatus, Turn, Verdict

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = [f"model-{i}" for i in range(5)]


def synthetic_run(i: int, rng: random.Random) -> RunResult:
    msgs = [ChatMessage(role="user", content=f"Question {i}: " + "explain the trade-offs in detail. " * 6)]
    turns = []
    for n, role in enumerate((Role.THINKER, Role.WORKER, Role.VERIFIER), start=1):
        failed = rng.random() < 0.1
        turns.append(
            Turn(
                turn=n,
                role=role,
                model=rng.choice(MODELS),
                messages=msgs,
                output="" if failed else f"output {i} " * 10,
                error="HTTP 500 from upstream" if failed else None,
                verdict=(Verdict.ACCEPT if rng.random() < 0.7 else Verdict.REVISE)
                if role == Role.VERIFIER and not failed
                else None,
                prompt_tokens=rng.randint(50, 500),
                completion_tokens=rng.randint(5, 200),
                cost_usd=rng.random() * 1e-4,
                latency_s=rng.random() * 2,
                retries=int(failed),
            )
        )
    status = RunStatus.ACCEPTED if turns[-1].verdict == Verdict.ACCEPT else RunStatus.ANSWERED
    return RunResult(
        run_id=f"run_{i:08d}",
        query=f"q{i}",
        answer="a",
        status=status,
        reason="ok",
        turns=turns,
        started_at=1.7e9 + i,
    )


def fill(store: Store, start: int, stop: int, rng: random.Random) -> None:
    t0 = time.perf_counter()
    for lo in range(start, stop, 1000):
        store.record_many([(synthetic_run(i, rng), "bench", None) for i in range(lo, min(stop, lo + 1000))])
        done = min(stop, lo + 1000) - start
        rate = done / (time.perf_counter() - t0)
        print(
            f"\r  filling: {start + done}/{stop} runs, ETA {(stop - start - done) / rate:.0f}s   ", end="", flush=True
        )
    print()


def python_model_stats(store: Store) -> list[dict[str, Any]]:
    """The former implementation (every turn row in memory), kept here as the 'before' peer."""
    from podium.traces.reports import _round, percentile

    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in store.turn_rows():
        groups[row["model"]].append(row)
    out = []
    for model, rows in sorted(groups.items()):
        ok = [r for r in rows if not r["error"]]
        latencies = [r["latency_s"] for r in ok]
        runs = {r["run_id"]: r["run_status"] for r in rows}
        verdicts = [r["verdict"] for r in ok if r["verdict"]]
        out.append(
            {
                "model": model,
                "calls": len(rows),
                "runs": len(runs),
                "roles": {
                    role: sum(r["role"] == role for r in rows)
                    for role in ("thinker", "worker", "verifier")
                    if any(r["role"] == role for r in rows)
                },
                "prompt_tokens": sum(r["prompt_tokens"] for r in rows),
                "completion_tokens": sum(r["completion_tokens"] for r in rows),
                "tokens": sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows),
                "cost_usd": round(sum(r["cost_usd"] for r in rows), 8),
                "latency_p50_s": _round(percentile(latencies, 50)),
                "latency_p95_s": _round(percentile(latencies, 95)),
                "accept_rate": round(sum(s == "accepted" for s in runs.values()) / len(runs), 4),
                "failure_rate": round((len(rows) - len(ok)) / len(rows), 4),
                "verifier_accept_share": round(verdicts.count("ACCEPT") / len(verdicts), 4) if verdicts else None,
                "retries": sum(r["retries"] for r in rows),
            }
        )
    return out


FAILED = "(t.error IS NOT NULL AND t.error <> '')"
SQL_BEFORE = (  # the former single GROUP BY over every turn joined with its run (before 0004_run_models)
    "SELECT t.model AS model, count(*) AS calls, count(DISTINCT t.run_id) AS runs, "
    + "".join(f"sum(CASE WHEN t.role = '{r}' THEN 1 ELSE 0 END) AS {r}, " for r in ("thinker", "worker", "verifier"))
    + "sum(t.prompt_tokens) AS prompt_tokens, sum(t.completion_tokens) AS completion_tokens, "
    f"sum(t.cost_usd) AS cost_usd, sum(CASE WHEN {FAILED} THEN 1 ELSE 0 END) AS failed, "
    f"sum(CASE WHEN NOT {FAILED} AND t.verdict IS NOT NULL AND t.verdict <> '' THEN 1 ELSE 0 END) AS verdicts, "
    f"sum(CASE WHEN NOT {FAILED} AND t.verdict = 'ACCEPT' THEN 1 ELSE 0 END) AS accepts, sum(t.retries) AS retries, "
    "count(DISTINCT CASE WHEN r.status = 'accepted' THEN t.run_id END) AS accepted_runs "
    "FROM turns t JOIN runs r ON r.id = t.run_id GROUP BY t.model ORDER BY t.model"
)


def sql_model_stats_before(db: str) -> list[dict[str, Any]]:
    """The former SQL ``model_stats``: one GROUP BY over the turns, then every successful latency
    streamed in (model, latency) order, keeping the percentile ranks; run on a store before 0004,
    opened without :class:`Store` (which would migrate it)."""
    import sqlite3

    from podium.traces.reports import _rank_percentiles, _ranks

    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        aggs = [dict(r) for r in conn.execute(SQL_BEFORE)]
        n = {a["model"]: a["calls"] - a["failed"] for a in aggs}
        values: dict[str, dict[int, float]] = defaultdict(dict)
        model, rank, need = None, 0, set[int]()
        lat = "SELECT t.model, t.latency_s FROM turns t JOIN runs r ON r.id = t.run_id WHERE (t.error IS NULL OR t.error = '') ORDER BY t.model, t.latency_s"
        for name, value in conn.execute(lat):
            if name != model:
                model, rank, need = name, 0, _ranks(n[name], (50.0, 95.0))
            if rank in need:
                values[name][rank] = value
            rank += 1
    out = []
    for a in aggs:
        p50, p95 = _rank_percentiles(values[a["model"]], n[a["model"]], (50.0, 95.0)) if n[a["model"]] else (None, None)
        out.append({**a, "p50": p50, "p95": p95})
    return out


def revert_to_before_0004(src: Path, dst: Path) -> None:
    """``dst``: a copy of the store at ``src`` as it was before migration 0004_run_models."""
    import sqlite3

    with sqlite3.connect(src) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copyfile(src, dst)
    conn = sqlite3.connect(dst, isolation_level=None)
    for sql in (
        "DROP TABLE run_models",
        "DROP INDEX turns_ok_latency",
        "CREATE INDEX turns_model ON turns(model)",
        "DELETE FROM schema_migrations WHERE name = '0004_run_models'",
    ):
        conn.execute(sql)
    conn.close()


OPS = {
    "none": "None",
    "stats (python, before)": "python_model_stats(store)",
    "stats (sql, before: GROUP BY over turns)": "sql_model_stats_before(db)",
    "stats (sql)": "model_stats(store)",
    "migrate to 0004": "Store.open(db).migrations()",
    "ls --model": "store.runs(model='model-3', limit=20)",
    "ls": "store.runs(limit=20)",
}
CHILD = """
import json, resource, sys, time
sys.path.insert(0, {bench!r})
from bench_traces_scale import python_model_stats, sql_model_stats_before
from podium.traces.reports import model_stats
from podium.traces.store import Store
db = {db!r}
store = None if {before_0004!r} else Store.open(db)  # Store.open would migrate the reverted copy
t = time.perf_counter()
out = {expr}
elapsed = time.perf_counter() - t
print(json.dumps({{"s": elapsed, "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "out": out}}, default=str))
"""


BEFORE_0004 = ("stats (sql, before: GROUP BY over turns)", "migrate to 0004")  # run on the reverted copy


def measure(db: Path, op: str) -> dict[str, Any]:
    if op in BEFORE_0004:
        old = db.with_name("before-0004.db")  # made once per size, by main
        if op == "migrate to 0004":  # each sample migrates a fresh copy
            shutil.copyfile(old, db.with_name("migrating.db"))
            old = db.with_name("migrating.db")
        db = old
    code = CHILD.format(bench=str(Path(__file__).parent), db=str(db), expr=OPS[op], before_0004=op in BEFORE_0004)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def stats(xs: list[float]) -> dict[str, float]:
    return {"min": round(min(xs), 4), "median": round(statistics.median(xs), 4), "max": round(max(xs), 4)}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 100_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "traces_scale.json"))
    parser.add_argument(
        "--start-from",
        default=None,
        metavar="DB:N",
        help="copy a store this benchmark already filled with its first N runs (same seed) instead of filling them",
    )
    args = parser.parse_args()
    report: dict[str, Any] = {"load": {"start": uptime()}, "sizes": {}}
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "podium.db"
        filled = 0
        if args.start_from:
            source, _, count = args.start_from.rpartition(":")
            shutil.copyfile(source, db)
            filled = int(count)
            for i in range(filled):  # the generator's draws for the runs copied, so the rest is the same
                synthetic_run(i, rng)
        store = Store.open(db)
        for size in sorted(args.sizes):
            fill(store, filled, size, rng)
            filled = size
            revert_to_before_0004(db, db.with_name("before-0004.db"))
            rows: dict[str, Any] = {}
            for op in OPS:
                samples = [measure(db, op) for _ in range(args.repeats)]
                rows[op] = {"s": stats([x["s"] for x in samples]), "rss_kib": stats([x["rss_kib"] for x in samples])}
                rows[op]["_out"] = samples[-1]["out"]
            base = rows["none"]["rss_kib"]["median"]
            for op in OPS:
                rows[op]["peak_mib_over_open"] = round((rows[op]["rss_kib"]["median"] - base) / 1024, 1)
            assert rows["stats (sql)"]["_out"] == rows["stats (python, before)"]["_out"], "stats disagree"
            before = {m["model"]: m for m in rows["stats (sql, before: GROUP BY over turns)"]["_out"]}
            assert all(before[m["model"]]["runs"] == m["runs"] for m in rows["stats (sql)"]["_out"]), "before disagrees"
            for op in OPS:
                rows[op].pop("_out")
            report["sizes"][size] = rows
            print(f"  {size} runs: " + ", ".join(f"{op} {rows[op]['s']['median']:.3f}s" for op in OPS if op != "none"))
    report["load"]["end"] = uptime()
    lines = [
        f"Load at start: `{report['load']['start']}`  ",
        f"Load at end: `{report['load']['end']}`",
        "",
        f"Each cell: median seconds (min–max) over {args.repeats} fresh processes; peak memory = peak RSS minus "
        "that of a process that only opens the store.",
        "",
        "| runs | operation | seconds | peak MiB over open |",
        "|---:|---|---:|---:|",
    ]
    for size, rows in report["sizes"].items():
        for op, r in rows.items():
            if op != "none":
                s = r["s"]
                lines.append(
                    f"| {size} | {op} | {s['median']:.3f} ({s['min']:.3f}–{s['max']:.3f}) | {r['peak_mib_over_open']} |"
                )
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text("# Trace analysis at scale (bench/bench_traces_scale.py)\n\n" + text + "\n")


if __name__ == "__main__":
    main()

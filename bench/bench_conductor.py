"""The conductor against every single model and every fixed topology, on tasks with a checkable answer.

Part 1, scripted specialists (``bench/specialists.py``): each model is right only on its own kind
of subtask, and tasks need several kinds combined. The conductor is a scripted function that plans
from the model cards it is shown (stated in the results). All approaches run in the same process
through ``Engine.run`` on the same tasks; accuracy has Wilson 95% intervals, and conductor minus
each peer a paired bootstrap 95% interval.

Part 2, embedded pool (SmolLM2-135M in llama.cpp, ``--embedded N``): N GSM8K test items from
``../shared/data/tasks/gsm8k``, single model vs conductor (and the chain topology), checked by the
last number in the answer; reported as measured, with time and cost. Slow: run it in the background
with ``nice -n 10``.

    python bench/bench_conductor.py [--n 100] [--embedded 20]

Writes bench/results/conductor.json and bench/results/conductor.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import itertools
import json
import math
import os
import platform
import random
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import specialists

from podium import Budget, Engine, load_pool
from podium.backends import BackendSet
from podium.backends.scripted import ScriptedBackend
from podium.coordinators import get_coordinator
from podium.pool import parse_pool

RESULTS = HERE / "results"
GSM8K = HERE.parent.parent / "shared" / "data" / "tasks" / "gsm8k" / "test.jsonl.gz"
SCRIPTED_APPROACHES = [
    "fixed:calc",
    "fixed:lexi",
    "fixed:tally",
    "fixed:generalist",
    "topology:chain",
    "topology:moa",
    "topology:best-of-n",
    "topology:debate",
    "conductor",
]
EMBEDDED_APPROACHES = ["fixed:smollm2-worker", "topology:chain", "conductor"]


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score 95% interval of a proportion."""
    if n == 0:
        return 0.0, 0.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_bootstrap(a: list[bool], b: list[bool], reps: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95% interval of mean(a) - mean(b) over items resampled with replacement."""
    rng, n = random.Random(seed), len(a)
    diffs = sorted(sum(a[i] - b[i] for i in (rng.randrange(n) for _ in range(n))) / n for _ in range(reps))
    return diffs[int(0.025 * reps)], diffs[int(0.975 * reps) - 1]


def scripted_engine(approach: str) -> Engine:
    pool = parse_pool(specialists.POOL_YAML, "bench/specialists.py")
    counter = itertools.count()  # samples of one model differ (best-of-n)
    backends = {
        name: ScriptedBackend(
            spec,
            (
                lambda r, name=name: specialists.respond(
                    name, "\n".join(m.content for m in r.messages), str(next(counter))
                )
            ),
        )
        for name, spec in pool.models.items()
        if name != "conductor"
    }
    backends["conductor"] = ScriptedBackend(
        pool.get("conductor"), lambda r: specialists.conductor("\n".join(m.content for m in r.messages))
    )
    return Engine(pool, approach, backends=BackendSet(overrides=backends))


async def run_approach(engine: Engine, items: list[tuple[str, str]], check, budget: Budget, label: str) -> dict:
    """Run every item; per-item correctness, tokens, cost and time."""
    rows, started = [], time.perf_counter()
    for i, (question, expected) in enumerate(items, 1):
        t0 = time.perf_counter()
        result = await engine.run(question, budget=budget)
        rows.append(
            {
                "ok": bool(check(result.answer, expected)),
                "status": result.status.value,
                "steps": len(result.turns),
                "tokens": result.total_tokens
                + result.orchestration_prompt_tokens
                + result.orchestration_completion_tokens,
                "cost_usd": result.cost_usd + result.orchestration_cost_usd,
                "latency_s": time.perf_counter() - t0,
                "plan": (result.workflow or {}).get("plans", [{}])[0].get("origin") if result.workflow else None,
            }
        )
        if i % max(1, len(items) // 5) == 0 or i == len(items):
            elapsed = time.perf_counter() - started
            print(
                f"  {label}: {i}/{len(items)}, {elapsed:.0f}s, ETA {elapsed / i * (len(items) - i):.0f}s",
                file=sys.stderr,
                flush=True,
            )
    return summarise(rows)


def summarise(rows: list[dict]) -> dict:
    k, n = sum(r["ok"] for r in rows), len(rows)
    lo, hi = wilson(k, n)
    return {
        "correct": k,
        "n": n,
        "accuracy": k / n if n else 0.0,
        "ci95": [lo, hi],
        "ok": [r["ok"] for r in rows],
        "mean_steps": sum(r["steps"] for r in rows) / n,
        "mean_tokens": sum(r["tokens"] for r in rows) / n,
        "cost_usd": sum(r["cost_usd"] for r in rows),
        "mean_latency_s": sum(r["latency_s"] for r in rows) / n,
        "statuses": {s: sum(r["status"] == s for r in rows) for s in {r["status"] for r in rows}},
        "plan_origins": sorted({r["plan"] for r in rows if r["plan"]})[:5],
    }


async def scripted_part(n: int) -> dict:
    tasks = specialists.make_tasks(n)
    items = [(t.question, t.answer) for t in tasks]
    out = {}
    for approach in SCRIPTED_APPROACHES:
        engine = scripted_engine(approach)
        out[approach] = await run_approach(engine, items, specialists.check, Budget(max_turns=16), approach)
        await engine.aclose()
    best = out["conductor"]["ok"]
    for approach, row in out.items():
        if approach != "conductor":
            row["conductor_minus_this_ci95"] = list(paired_bootstrap(best, row["ok"]))
    return {
        "tasks": n,
        "parts_histogram": {k: sum(len(t.kinds) == k for t in tasks) for k in (1, 2, 3)},
        "approaches": out,
    }


def last_number(text: str | None) -> str | None:
    """The last number in a text, normalised (commas dropped, trailing .0 removed)."""
    found = re.findall(r"-?\d[\d,]*(?:\.\d+)?", text or "")
    if not found:
        return None
    value = found[-1].replace(",", "").rstrip(".")
    return value[:-2] if value.endswith(".0") else value


def gsm8k_items(n: int) -> list[tuple[str, str]]:
    with gzip.open(GSM8K, "rt") as f:
        rows = [json.loads(line) for line in itertools.islice(f, n)]
    return [(r["question"], r["answer"].split("####")[-1].strip().replace(",", "")) for r in rows]


async def embedded_part(n: int) -> dict:
    items = gsm8k_items(n)
    check = lambda reply, expected: last_number(reply) == expected  # noqa: E731
    out, pool = {}, load_pool("embedded")
    for approach in EMBEDDED_APPROACHES:
        coordinator = get_coordinator(approach)
        if getattr(coordinator, "plans_workflows", False):
            coordinator.rounds = 1  # no follow-up round: each call takes ~20 s on this shared CPU
        engine = Engine(pool, coordinator)
        out[approach] = await run_approach(engine, items, check, Budget(max_turns=6), approach)
        await engine.aclose()
    for approach, row in out.items():
        if approach != "conductor":
            row["conductor_minus_this_ci95"] = list(paired_bootstrap(out["conductor"]["ok"], row["ok"]))
    return {
        "items": n,
        "source": "first N of ../shared/data/tasks/gsm8k/test.jsonl.gz",
        "check": "last number equals the reference",
        "rounds": 1,
        "approaches": out,
    }


def table(part: dict, title: str) -> list[str]:
    lines = [
        f"### {title}",
        "",
        "| approach | correct | accuracy (95% CI) | conductor − this (95% CI) | mean steps | mean tokens | total cost $ | mean time s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in part["approaches"].items():
        diff = r.get("conductor_minus_this_ci95")
        diff_text = f"[{diff[0]:+.2f}, {diff[1]:+.2f}]" if diff else "—"
        lines.append(
            f"| {name} | {r['correct']}/{r['n']} | {r['accuracy']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] | {diff_text} | "
            f"{r['mean_steps']:.1f} | {r['mean_tokens']:.0f} | {r['cost_usd']:.6f} | {r['mean_latency_s']:.3f} |"
        )
    return lines


HEADER = """# Conductor vs single models and fixed topologies

Produced by `bench/bench_conductor.py`. Every approach runs through `Engine.run` in the same process
on the same items. Accuracy: Wilson 95% interval. "conductor − this": paired bootstrap 95% interval of
the accuracy difference (10,000 resamples of the items); an interval above 0 means the conductor wins.
Tokens and cost include the conductor's own planning calls (orchestration).

**Scripted specialists** (`bench/specialists.py`): `calc`, `lexi` and `tally` are right (90%) only on
arithmetic, word-reversal and letter-counting parts respectively; `generalist` is right on any part half
of the time; tasks have 1-3 parts of random kinds. **The conductor model is a scripted function**: it
reads the model cards podium shows it (the `strengths` tags) and the task's parts, gives each part to the
matching specialist with a focused instruction ("Solve only part B"), and merges. It shows what
podium's workflow engine does with a sensible plan, not how well any real model plans.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100, help="scripted specialist tasks")
    parser.add_argument("--embedded", type=int, default=0, help="GSM8K items on the embedded pool (0: skip)")
    parser.add_argument("--out", default=str(RESULTS / "conductor"))
    args = parser.parse_args()
    started = time.time()
    report = {
        "machine": {
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
            "load_at_start": os.getloadavg(),
        },
        "scripted": asyncio.run(scripted_part(args.n)),
    }
    if args.embedded:
        report["embedded"] = asyncio.run(embedded_part(args.embedded))
    report["machine"]["load_at_end"] = os.getloadavg()
    report["wall_s"] = time.time() - started
    lines = table(
        report["scripted"],
        f"Scripted specialists ({args.n} tasks; parts per task {report['scripted']['parts_histogram']})",
    )
    if "embedded" in report:
        lines += [""] + table(report["embedded"], f"Embedded pool, SmolLM2-135M, {args.embedded} GSM8K items")
    print("\n".join(lines))
    load = (
        f"load average (1/5/15 min) {tuple(round(x, 1) for x in report['machine']['load_at_start'])} at start, "
        f"{tuple(round(x, 1) for x in report['machine']['load_at_end'])} at end; wall {report['wall_s']:.0f}s"
    )
    Path(args.out + ".json").write_text(json.dumps(report, indent=1))
    Path(args.out + ".md").write_text(
        "\n".join(
            [
                HEADER,
                f"Machine: {report['machine']['cpu']}, Python {report['machine']['python']}; {load}.",
                "",
                *lines,
                "",
            ]
        )
    )
    print(f"\nwrote {args.out}.json and {args.out}.md; {load}")


if __name__ == "__main__":
    main()

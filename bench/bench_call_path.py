"""Microseconds a pass-through spends in two per-request pieces of podium's own Python, on this tree
and another, interleaved: the reliability stack of a model call, and the scrub check of the answer.

- ``call, layers``: one :class:`~podium.reliability.ModelCall` through the model's stack (retry,
  guard with its total time limit, splice) to an in-process backend that answers at once;
- ``call, bare``: the same ModelCall with the backend itself in place of the stack, so the
  difference is the stack's cost;
- ``answer, rendered``: a chat.completion body as the server writes it (``ScrubbedJSON.render``);
- ``answer, dumps_scrubbed``: the same body through json.dumps with the scrub check (the server's
  way before session 14's pydantic-core path);
- ``answer, json.dumps``: the same without the scrub check;
- ``metrics, one request``: a pass-through's metric updates (in flight, its run, the request).

Each round runs one process per tree (order alternating); each process times every item in blocks
of ``--calls`` and keeps the fastest of ``--blocks`` blocks (the least disturbed by the machine's other
work). Ratios this tree / the other are taken within a round, reported as median (min–max).

    .venv/bin/python bench/bench_call_path.py --before-src DIR/src [--rounds 7] [--name NAME]

Writes bench/results/call_path_NAME.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
ITEMS = [
    "call, layers",
    "call, bare",
    "answer, rendered",
    "answer, dumps_scrubbed",
    "answer, json.dumps",
    "metrics, one request",
]

CHILD = r"""
import asyncio, json, sys, time
from podium.pool import ModelSpec
from podium.reliability import BreakerRegistry, Layers, ModelCall
from podium.backends import BackendSet
from podium.scrub import dumps_scrubbed
from podium.server.metrics import Metrics
from podium.server.middleware import ScrubbedJSON
from podium.types import Role, RunResult, Turn
from podium.types import ChatMessage, Completion, CompletionRequest, Usage

calls, blocks = int(sys.argv[1]), int(sys.argv[2])
spec = ModelSpec(name="m", backend="openai", model="x", base_url="http://127.0.0.1:9/v1")
completion = Completion(text="ACCEPT: the answer is 391.", model="m", usage=Usage(prompt_tokens=20, completion_tokens=8))
request = CompletionRequest(messages=[ChatMessage(role="user", content="What is 17 * 23?")], max_tokens=64)


class Instant:
    def __init__(self): self.spec = spec
    async def complete(self, request): return completion
    async def aclose(self): pass


layers = Layers(BackendSet(overrides={"m": Instant()}), BreakerRegistry())
bare = Layers(BackendSet(overrides={"m": Instant()}), BreakerRegistry())
bare._stacks["m"] = Instant()  # the backend itself where the stack would be
body = {"id": "chatcmpl-0123456789abcdef01234567", "object": "chat.completion", "created": 1764633600,
        "model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": completion.text},
        "finish_reason": "stop"}], "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28,
        "cost": 0.0}, "podium": {"trace_id": "r-0123456789abcdef", "served_model": "m", "models": ["m"]}}
dumps = {"allow_nan": False, "indent": None, "separators": (",", ":")}
metrics = Metrics()
turn = Turn(turn=1, role=Role.WORKER, model="m", prompt_tokens=20, completion_tokens=8, latency_s=0.01)
run = RunResult(run_id="r-1", query="q", answer="a", status="answered", pool="p", coordinator="passthrough", turns=[turn])


def count_one():
    metrics.in_flight += 1
    metrics.run("m", run)
    metrics.request("m", "model", 200, 0.02)
    metrics.in_flight -= 1


if not isinstance(metrics.in_flight, int):  # before session 14 the in-flight gauge was prometheus_client's own
    def count_one():
        metrics.in_flight.inc()
        metrics.run("m", run)
        metrics.request("m", "model", 200, 0.02)
        metrics.in_flight.dec()


async def timed(make):
    for _ in range(calls // 10):
        await make()
    best = float("inf")
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(calls):
            await make()
        best = min(best, (time.perf_counter() - start) / calls * 1e6)
    return best


async def main():
    out = {}
    out["call, layers"] = await timed(lambda: ModelCall(layers, [spec], request, lambda s, r: r).run())
    out["call, bare"] = await timed(lambda: ModelCall(bare, [spec], request, lambda s, r: r).run())
    response = ScrubbedJSON({})
    async def rendered(): return response.render(body)
    out["answer, rendered"] = await timed(rendered)
    async def scrubbed(): return dumps_scrubbed(body, **dumps)
    async def plain(): return json.dumps(body, ensure_ascii=False, **dumps)
    out["answer, dumps_scrubbed"] = await timed(scrubbed)
    out["answer, json.dumps"] = await timed(plain)
    async def counted(): count_one()
    out["metrics, one request"] = await timed(counted)
    print(json.dumps(out))


asyncio.run(main())
"""


def measure(src: str, calls: int, blocks: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": src}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(calls), str(blocks)], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def summarize(per_round: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Each item's spread on each tree, and of the ratio this tree / before taken within each round."""
    items = {}
    for item in ITEMS:
        now = [r["this tree"][item] for r in per_round]
        before = [r["before"][item] for r in per_round]
        ratios = [a / b for a, b in zip(now, before)]
        items[item] = {"this tree": spread(now), "before": spread(before), "ratio": spread(ratios)}
    return items


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def table(report: dict) -> str:
    rows = [
        f"Microseconds per item (fastest block of {report['blocks']} × {report['calls']}), {report['rounds']} rounds; "
        "median (min–max).",
        "",
        "| item | this tree µs | before µs | this tree × before (same round) |",
        "|---|---:|---:|---:|",
    ]
    for item in ITEMS:
        now, before, ratio = (report["items"][item][k] for k in ("this tree", "before", "ratio"))
        rows.append(
            f"| {item} | {now['median']:.2f} ({now['min']:.2f}–{now['max']:.2f}) "
            f"| {before['median']:.2f} ({before['min']:.2f}–{before['max']:.2f}) "
            f"| {ratio['median']:.3f} ({ratio['min']:.3f}–{ratio['max']:.3f}) |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before-src", required=True, help="another tree's src/ (git archive)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--name", default="latest")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the .json and .md go")
    args = parser.parse_args()
    trees = {"this tree": str(ROOT / "src"), "before": args.before_src}
    per_round: list[dict[str, dict[str, float]]] = []
    started = time.time()
    load = [os.getloadavg()]
    for i in range(args.rounds):
        order = list(trees) if i % 2 == 0 else list(reversed(trees))
        per_round.append({name: measure(trees[name], args.calls, args.blocks) for name in order})
        eta = (time.time() - started) / (i + 1) * (args.rounds - i - 1)
        print(f"round {i + 1}/{args.rounds}: {json.dumps(per_round[-1])}; ETA {eta:.0f} s", file=sys.stderr)
    load.append(os.getloadavg())
    items = summarize(per_round)
    report = {
        "rounds": args.rounds,
        "calls": args.calls,
        "blocks": args.blocks,
        "before_src": args.before_src,
        "load_1m_start_end": [round(load[0][0], 2), round(load[1][0], 2)],
        "items": items,
        "per_round": per_round,
    }
    text = table(report)
    print(text)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"call_path_{args.name}.json").write_text(json.dumps(report, indent=2))
    md = f"# Call path ({args.name})\n\nLoad (1 min) at start and end: {report['load_1m_start_end']}.\n\n{text}\n"
    (args.results / f"call_path_{args.name}.md").write_text(md)
    print(f"wrote {args.results}/call_path_{args.name}.md and .json")


if __name__ == "__main__":
    main()

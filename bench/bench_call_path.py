"""Microseconds a pass-through spends in podium's own Python, on this tree and another, interleaved:
pieces of a request (the reliability stack of a model call, the answer's body, the metrics) and a
whole request in-process.

- ``call, layers``: one :class:`~podium.reliability.ModelCall` through the model's stack (retry,
  guard with its total time limit, splice) to an in-process backend that answers at once;
- ``call, bare``: the same ModelCall with the backend itself in place of the stack, so the
  difference is the stack's cost;
- ``answer, rendered``: a chat.completion body as the server writes it (``ScrubbedJSON.render``);
- ``answer, dumps_scrubbed``: the same body through json.dumps with the scrub check (the server's
  way before session 14's pydantic-core path);
- ``answer, json.dumps``: the same without the scrub check;
- ``metrics, one request``: a pass-through's metric updates (in flight, its run, the request);
- ``request, in-process``: a whole pass-through request through the app's ASGI layers (key check,
  validation, plan, the model call through its stack, accounting, the answer's body), with the
  model's backend answering at once, traces off and no sockets: podium's own Python per request,
  without uvicorn, the upstream HTTP client or the trace store.

One process per tree stays loaded for the whole run (the collector set as ``podium serve`` sets
it), and the two take turns: for each item, ``--rounds`` pairs of blocks of about ``--block-s``
seconds, one per tree back to back, which goes first alternating. The shared machine's speed drifts
by up to 2x within a minute (session 15: the same code measured 0.54-1.76x itself in separate
processes a few seconds apart), so a ratio is only taken between two blocks timed back to back:
this tree / the other per pair, reported as median (min–max) over the pairs.

    .venv/bin/python bench/bench_call_path.py --before-src DIR/src [--rounds 15] [--name NAME]

Writes bench/results/call_path_NAME.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
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
    "request, in-process",
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

work = sys.argv[1]
spec = ModelSpec(name="m", backend="openai", model="x", base_url="http://127.0.0.1:9/v1")
completion = Completion(text="ACCEPT: the answer is 391.", model="m", usage=Usage(prompt_tokens=20, completion_tokens=8))
request = CompletionRequest(messages=[ChatMessage(role="user", content="What is 17 * 23?")], max_tokens=64)


class Instant:
    def __init__(self, model=None): self.spec = model or spec
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


def request_app():
    # the server app over a one-model pool whose backend answers at once (traces off: see the doc)
    import pathlib, yaml
    from podium.server.app import create_app
    from podium.server.auth import hash_key
    root = pathlib.Path(work)
    pool = {"name": "bench", "models": [{"name": "m", "backend": "openai", "base_url": "http://127.0.0.1:9/v1",
            "model": "m", "max_tokens": 64, "max_retries": 0}]}
    keys = {"keys": [{"name": "bench", "sha256": hash_key("sk-bench"), "rate_limit": {"requests_per_minute": 10**9}}]}
    (root / "pool.yaml").write_text(yaml.safe_dump(pool))
    (root / "keys.yaml").write_text(yaml.safe_dump(keys))
    app = create_app(str(root / "pool.yaml"), keys=str(root / "keys.yaml"))
    service = app.state.service
    # in place of the HTTP backend, with the pool's own spec (another would rebuild the stack each call)
    service.backends._backends["m"] = Instant(service.pool.config_model("m"))
    return app


app = request_app()
payload = json.dumps({"model": "m", "messages": [{"role": "user", "content": "What is 17 * 23?"}], "max_tokens": 32}).encode()
heads = [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
         (b"content-length", str(len(payload)).encode()), (b"authorization", b"Bearer sk-bench")]
sent = []


async def receive(): return {"type": "http.request", "body": payload, "more_body": False}
async def send(message): sent.append(message)


async def one_request():
    sent.clear()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "query_string": b"",
             "root_path": "", "headers": heads, "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}
    await app(scope, receive, send)
    assert sent[0]["status"] == 200, sent


async def main():
    response = ScrubbedJSON({})
    async def rendered(): return response.render(body)
    async def scrubbed(): return dumps_scrubbed(body, **dumps)
    async def plain(): return json.dumps(body, ensure_ascii=False, **dumps)
    async def counted(): count_one()
    makers = {
        "call, layers": lambda: ModelCall(layers, [spec], request, lambda s, r: r).run(),
        "call, bare": lambda: ModelCall(bare, [spec], request, lambda s, r: r).run(),
        "answer, rendered": rendered,
        "answer, dumps_scrubbed": scrubbed,
        "answer, json.dumps": plain,
        "metrics, one request": counted,
        "request, in-process": one_request,
    }
    import gc
    gc.collect()
    gc.freeze()
    gc.set_threshold(7000, 100, gc.get_threshold()[2])  # as podium serve sets it
    print("ready", flush=True)
    for line in sys.stdin:  # "ITEM\tCALLS": time one block, answer with microseconds per call
        item, calls = line.rstrip("\n").split("\t")
        make = makers[item]
        # no call yields to the loop, so each call's cancelled time-limit timer stays in its heap (a
        # heap push grows with it) until the loop runs once: as in a server, where it runs between requests
        await asyncio.sleep(0)
        start = time.perf_counter()
        for _ in range(int(calls)):
            await make()
        print((time.perf_counter() - start) / int(calls) * 1e6, flush=True)


asyncio.run(main())
"""


class Tree:
    """One tree's child process, loaded once, timing one block of an item when asked."""

    def __init__(self, src: str, work: str) -> None:
        Path(work).mkdir()
        env = {**os.environ, "PYTHONPATH": src, "PODIUM_TRACES": "off", "PODIUM_HOME": work}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, work], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        if self._line() != "ready":
            raise SystemExit(f"the child for {src} did not start (exit {self.proc.wait()})")

    def _line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def block(self, item: str, calls: int) -> float:
        """Microseconds per call of ``item`` over ``calls`` calls."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{item}\t{calls}\n")
        self.proc.stdin.flush()
        line = self._line()
        if not line:
            raise SystemExit(f"a child died timing {item!r} (exit {self.proc.wait()})")
        return float(line)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def measure(trees: dict[str, Tree], rounds: int, block_s: float) -> list[dict[str, dict[str, float]]]:
    """Each item: a warm-up block per tree sizes the blocks to about ``block_s``; then ``rounds``
    pairs of blocks, one per tree back to back (which goes first alternates)."""
    per_round: list[dict[str, dict[str, float]]] = [{name: {} for name in trees} for _ in range(rounds)]
    started = time.time()
    for n, item in enumerate(ITEMS):
        warm = max(tree.block(item, 50) for tree in trees.values())
        calls = max(20, int(block_s / (warm / 1e6)))
        for i in range(rounds):
            order = list(trees) if i % 2 == 0 else list(reversed(trees))
            for name in order:
                per_round[i][name][item] = trees[name].block(item, calls)
        eta = (time.time() - started) / (n + 1) * (len(ITEMS) - n - 1)
        print(f"{item}: {calls} calls a block, {rounds} pairs; ETA {eta:.0f} s", file=sys.stderr)
    return per_round


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
        f"Microseconds per call of each item, in blocks of about {report['block_s']} s; {report['rounds']} pairs of "
        "blocks per item, one per tree back to back; median (min–max).",
        "",
        "| item | this tree µs | before µs | this tree × before (same pair) |",
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
    parser.add_argument("--rounds", type=int, default=15, help="pairs of blocks per item")
    parser.add_argument("--block-s", type=float, default=0.3, help="seconds a block lasts (about)")
    parser.add_argument("--name", default="latest")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the .json and .md go")
    args = parser.parse_args()
    load = [os.getloadavg()]
    with tempfile.TemporaryDirectory() as work:
        srcs = {"this tree": str(ROOT / "src"), "before": args.before_src}
        trees = {name: Tree(src, str(Path(work) / name.replace(" ", "_"))) for name, src in srcs.items()}
        try:
            per_round = measure(trees, args.rounds, args.block_s)
        finally:
            for tree in trees.values():
                tree.close()
    load.append(os.getloadavg())
    items = summarize(per_round)
    report = {
        "rounds": args.rounds,
        "block_s": args.block_s,
        "before_src": args.before_src,
        "load_1m_start_end": [round(load[0][0], 2), round(load[1][0], 2)],
        "items": items,
        "per_round": per_round,
    }
    text = table(report)
    print(text)
    write_results(args.results, f"call_path_{args.name}", f"Call path ({args.name})", report, text)


def write_results(results: Path, stem: str, title: str, report: dict, text: str) -> None:
    """``report`` as ``STEM.json`` and ``text`` (a table) as ``STEM.md`` under its title and the load."""
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{stem}.json").write_text(json.dumps(report, indent=2))
    md = f"# {title}\n\nLoad (1 min) at start and end: {report['load_1m_start_end']}.\n\n{text}\n"
    (results / f"{stem}.md").write_text(md)
    print(f"wrote {results}/{stem}.md and .json")


if __name__ == "__main__":
    main()

"""CPU per upstream call of podium's HTTP client, against the floor (a bare asyncio protocol) and,
with ``--before-src``, an earlier tree, in the same rounds.

Each round runs, for each tree, a fresh child process on uvloop that makes ``--calls`` calls from 50
concurrent tasks to the stub of ``bench_server.py`` (its own process, so not counted) three ways:

* ``raw``: a minimal asyncio protocol writing a fixed request and waiting for its Content-Length: the
  floor any Python client pays (system calls, the event loop);
* ``post_json_read``: ``LeanClient.post_json_read``, the transport alone (JSON body in, bytes out);
* ``backend.complete``: ``OpenAIBackend.complete``, what a pass-through pays for its upstream call.

CPU is the child's own (``time.process_time``) per call. Ratios are taken within a round, then the
median (min–max) over rounds.

    python bench/bench_upstream_client.py [--rounds 5] [--calls 20000] [--before-src DIR] [--name NAME]

Writes bench/results/upstream_client[_NAME].json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import bench_server as bs

RESULTS = ROOT / "bench" / "results"
WAYS = ("raw", "post_json_read", "backend.complete")
CONCURRENCY = 50


class _Raw(asyncio.Protocol):
    """A fixed request's answer, found by its Content-Length (the stub's answers have one)."""

    def __init__(self) -> None:
        self.waiter: asyncio.Future[None] | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        length = int(self.buffer[:end].lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        if len(self.buffer) >= end + 4 + length and self.waiter is not None:
            self.buffer = self.buffer[end + 4 + length :]
            self.waiter.set_result(None)


async def _child(port: int, calls: int) -> dict[str, dict[str, float]]:
    import httpx

    try:
        from podium.backends._lean_client import lean_client
    except ImportError:  # a tree from before session 11
        from podium.backends.transport import lean_client  # type: ignore[attr-defined,no-redef]
    from podium.backends.openai import OpenAIBackend
    from podium.pool import ModelSpec
    from podium.types import ChatMessage, CompletionRequest

    base = f"http://127.0.0.1:{port}/v1"
    body = {"model": "m", "messages": [{"role": "user", "content": "What is 17 * 23?"}], "max_tokens": 32}
    client = lean_client()
    backend = OpenAIBackend(ModelSpec(name="m", backend="openai", base_url=base, model="m"), client)
    request = CompletionRequest(messages=[ChatMessage(role="user", content="What is 17 * 23?")], max_tokens=32)
    url, timeout = httpx.URL(base + "/chat/completions"), httpx.Timeout(30)
    data = json.dumps(body).encode()
    raw_request = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    raw_request += b"Content-Length: %d\r\n\r\n%b" % (len(data), data)
    loop = asyncio.get_running_loop()

    async def raw(n: int) -> None:
        transport, protocol = await loop.create_connection(_Raw, "127.0.0.1", port)
        for _ in range(n):
            protocol.waiter = loop.create_future()
            transport.write(raw_request)
            await protocol.waiter
        transport.close()

    async def read(n: int) -> None:
        for _ in range(n):
            await client.post_json_read(url, body, {}, timeout, 1 << 20)  # type: ignore[attr-defined]

    async def complete(n: int) -> None:
        for _ in range(n):
            await backend.complete(request)

    out: dict[str, dict[str, float]] = {}
    for name, work in zip(WAYS, (raw, read, complete), strict=True):
        if work is read and not hasattr(client, "post_json_read"):
            continue  # a tree from before session 11: that way is not there
        await asyncio.gather(*(work(20) for _ in range(CONCURRENCY)))  # warm: connections, caches
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(work(calls // CONCURRENCY) for _ in range(CONCURRENCY)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        done = CONCURRENCY * (calls // CONCURRENCY)
        out[name] = {"us_cpu_per_call": round(1e6 * cpu / done, 2), "calls_per_s": round(done / wall)}
    await client.aclose()
    return out


def _run_child(src: Path, port: int, calls: int) -> dict[str, dict[str, float]]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, __file__, "--child", str(port), "--calls", str(calls)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise SystemExit(f"error: the child for {src} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _fmt(stats: dict[str, float]) -> str:
    return f"{stats['median']} ({stats['min']}–{stats['max']})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--before-src", type=Path, default=None, help="an earlier tree's src/ (git archive)")
    parser.add_argument("--name", default="", help="results go to upstream_client_NAME.*")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        import uvloop

        print(json.dumps(uvloop.run(_child(args.child, args.calls))))
        return
    trees = {"this tree": ROOT / "src"}
    if args.before_src is not None:
        trees["before"] = args.before_src.resolve()
    port = bs.free_port()
    stub = bs.spawn([sys.executable, bs.__file__, "--stub", str(port)], dict(os.environ), Path(os.devnull))
    load = [bs.uptime()]
    rounds: list[dict[str, dict[str, dict[str, float]]]] = []
    try:
        bs.wait_up(f"http://127.0.0.1:{port}/v1/models", stub, 60)
        started = time.monotonic()
        for r in range(args.rounds):
            order = list(trees) if r % 2 == 0 else list(reversed(trees))  # alternate who goes first
            rounds.append({name: _run_child(trees[name], port, args.calls) for name in order})
            eta = (time.monotonic() - started) / (r + 1) * (args.rounds - r - 1)
            print(f"round {r + 1}/{args.rounds} done, ETA {eta:.0f} s", file=sys.stderr)
    finally:
        bs.stop(stub)
    load.append(bs.uptime())
    report = summarize(rounds, list(trees), args, load)
    text = table(report)
    print(text)
    stem = "upstream_client" + (f"_{args.name}" if args.name else "")
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=1))
    (RESULTS / f"{stem}.md").write_text(text)
    print(f"wrote bench/results/{stem}.md and .json")


def summarize(rounds: list[dict], trees: list[str], args: argparse.Namespace, load: list[str]) -> dict:
    rows = {
        tree: {
            way: bs.spread3([rnd[tree][way]["us_cpu_per_call"] for rnd in rounds])
            for way in WAYS
            if way in rounds[0][tree]
        }
        for tree in trees
    }
    ratios: dict[str, dict[str, float]] = {}
    for way in WAYS[1:]:
        ratios[f"{way} × raw (this tree)"] = bs.spread3(
            [rnd["this tree"][way]["us_cpu_per_call"] / rnd["this tree"]["raw"]["us_cpu_per_call"] for rnd in rounds]
        )
        if "before" in trees and way in rounds[0]["before"]:
            ratios[f"{way} × before"] = bs.spread3(
                [rnd["this tree"][way]["us_cpu_per_call"] / rnd["before"][way]["us_cpu_per_call"] for rnd in rounds]
            )
    config = {
        "rounds": args.rounds,
        "calls": args.calls,
        "concurrency": CONCURRENCY,
        "before_src": str(args.before_src),
    }
    return {"config": config, "load": load, "rows": rows, "ratios": ratios, "rounds": rounds}


def table(report: dict) -> str:
    lines = [
        *bs.load_lines(report["load"]),
        f"CPU µs per upstream call, median (min–max) over {report['config']['rounds']} rounds of "
        f"{report['config']['calls']} calls from {CONCURRENCY} tasks (the stub's CPU not counted).",
        "",
        "| tree | " + " | ".join(WAYS) + " |",
        "|---|" + "---:|" * len(WAYS),
    ]
    for tree, ways in report["rows"].items():
        lines.append(f"| {tree} | " + " | ".join(_fmt(ways[w]) if w in ways else "-" for w in WAYS) + " |")
    lines += ["", "Ratios within each round, median (min–max):", "", "| ratio | value |", "|---|---:|"]
    lines += [f"| {name} | {_fmt(stats)} |" for name, stats in report["ratios"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

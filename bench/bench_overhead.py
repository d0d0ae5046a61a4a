"""Podium's per-call overhead versus LiteLLM's Router, against the same loopback stub server.

Overhead = the time a framework adds beyond the backend's own latency, where the backend's
latency is what a bare httpx POST to the same stub takes (on podium's transport; httpx's default
httpcore pool is measured too, as a reference). Every client calls the same stub
(tests/faults/server.py in a separate process, fault ``ok``) in the same run, interleaved in
rounds so that machine load hits them alike, at each concurrency (1, 10, 50, 100 calls in flight
by default). Podium is measured end to end: ``Engine.run`` with the ``fixed`` coordinator (one
model call, with its retries, total timeout, circuit breaker, trace and cost accounting), once
without and once with the trace store (a fresh SQLite store, every run recorded). LiteLLM is
``Router.acompletion`` with retries configured. Ratios are taken within a round, then reported as
min/median/max over rounds. A missing LiteLLM is an error (exit 2) unless ``--without-peer``.

    pip install 'podium[bench]'    # bench only; not a podium dependency
    python bench/bench_overhead.py [--calls 200] [--rounds 3] [--concurrency 1 10 50 100]

Writes bench/results/overhead.json and bench/results/overhead.md and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MESSAGES = [{"role": "user", "content": "What is six times seven?"}]
Call = Callable[[], Awaitable[str]]
ORDER = ["raw httpx", "raw httpx (httpcore pool)", "podium", "podium + store", "litellm Router"]


def start_stub() -> tuple[subprocess.Popen, int]:
    """The fault server in its own process, so its CPU time is not charged to the clients."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "faults" / "server.py")], stdout=subprocess.PIPE, text=True
    )
    port = int(proc.stdout.readline())  # type: ignore[union-attr]
    return proc, port


async def raw_client(url: str, stream: bool, lean: bool = True) -> tuple[Call, Callable[[], Awaitable[None]]]:
    """The backend's own latency: a bare httpx call (streaming: reading the SSE deltas), on the same
    transport podium uses (``lean``) or on httpx's default one (httpcore's pool)."""
    from podium.backends.transport import LeanTransport

    client = httpx.AsyncClient(transport=LeanTransport()) if lean else httpx.AsyncClient()
    body = {"model": "ok", "messages": MESSAGES, "max_tokens": 64, "stream": stream}

    async def call() -> str:
        if not stream:
            r = await client.post(f"{url}/chat/completions", json=body)
            return r.json()["choices"][0]["message"]["content"]
        parts = []
        async with client.stream("POST", f"{url}/chat/completions", json=body) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    parts += [c["delta"].get("content") or "" for c in json.loads(line[6:])["choices"]]
        return "".join(parts)

    return call, client.aclose


async def podium_client(
    url: str, stream: bool, store: Path | None = None
) -> tuple[Call, Callable[[], Awaitable[None]]]:
    from podium.engine import Engine
    from podium.pool import parse_pool
    from podium.traces.store import Store

    spec = {
        "name": "ok",
        "backend": "openai",
        "base_url": url,
        "model": "ok",
        "max_tokens": 64,
        "input_usd_per_mtok": 1.0,
        "output_usd_per_mtok": 2.0,
    }
    engine = Engine(parse_pool(yaml.safe_dump({"name": "bench", "models": [spec]}), "bench"), "fixed")
    handler = Store.open(store).handler(source="bench") if store is not None else None

    async def call() -> str:
        result = await engine.run(MESSAGES[0]["content"], stream=stream, on_event=handler)
        assert result.answer, result.reason
        return result.answer

    async def close() -> None:
        await engine.aclose()
        flush = getattr(handler, "flush", None)  # a batching handler writes what it holds
        if flush is not None:
            flush()

    return call, close


async def litellm_client(url: str, stream: bool) -> tuple[Call, Callable[[], Awaitable[None]]]:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch at import
    import litellm
    from litellm import Router

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    router = Router(
        model_list=[{"model_name": "ok", "litellm_params": {"model": "openai/ok", "api_base": url, "api_key": "x"}}],
        num_retries=2,
        timeout=120,
    )

    async def call() -> str:
        if not stream:
            response = await router.acompletion(model="ok", messages=MESSAGES, max_tokens=64)
            return response.choices[0].message.content
        parts = []
        async for chunk in await router.acompletion(model="ok", messages=MESSAGES, max_tokens=64, stream=True):
            parts.append(chunk.choices[0].delta.content or "")
        return "".join(parts)

    return call, lambda: asyncio.sleep(0)


async def timed(call: Call, n: int, concurrency: int = 1) -> tuple[list[float], float]:
    """``n`` calls, ``concurrency`` in flight at a time: each call's latency and the wall time."""
    out: list[float] = []
    left = [n]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            t = time.perf_counter()
            answer = await call()
            out.append(time.perf_counter() - t)
            assert answer == "The answer is 42.", answer

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out, time.perf_counter() - started


async def make_clients(url: str, stream: bool, peer: bool, work: Path) -> dict[str, tuple[Call, Callable]]:
    clients = {
        "raw httpx": await raw_client(url, stream),
        "raw httpx (httpcore pool)": await raw_client(url, stream, lean=False),
        "podium": await podium_client(url, stream),
        "podium + store": await podium_client(url, stream, work / f"store-{stream}.db"),
    }
    if peer:
        clients["litellm Router"] = await litellm_client(url, stream)
    return clients


async def measure(url: str, args: argparse.Namespace, stream: bool, work: Path) -> list[dict]:
    """One row per (round, concurrency, client); clients interleaved within a round in a rotated order."""
    clients = await make_clients(url, stream, not args.without_peer, work)
    names = list(clients)
    for call, _ in clients.values():
        await timed(call, 20)  # warm up connections, imports, caches
    rows = []
    for r in range(args.rounds):
        for conc in args.concurrency:
            turn = (r + conc) % len(names)
            for name in names[turn:] + names[:turn]:
                xs, wall = await timed(clients[name][0], max(args.calls, conc), conc)
                rows.append(
                    {
                        "round": r + 1,
                        "concurrency": conc,
                        "client": name,
                        "calls": len(xs),
                        "median_ms": statistics.median(xs) * 1e3,
                        "p90_ms": statistics.quantiles(xs, n=10)[-1] * 1e3,
                        "calls_per_s": len(xs) / wall,
                    }
                )
        print(f"  {'streaming' if stream else 'non-streaming'}: round {r + 1}/{args.rounds} done", flush=True)
    for _, close in clients.values():
        await close()
    return rows


def _stats(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def summarize(rows: list[dict]) -> list[dict]:
    """Per (concurrency, client): overhead = its median latency minus raw httpx's in the same round;
    ratios to LiteLLM's overhead and to podium's throughput also within the round; min/median/max over rounds."""
    by = {(r["round"], r["concurrency"], r["client"]): r for r in rows}
    out = []
    for conc in sorted({r["concurrency"] for r in rows}):
        for client in sorted({r["client"] for r in rows}, key=ORDER.index):
            mine = [r for r in rows if r["concurrency"] == conc and r["client"] == client]
            over, vs_peer, rate = [], [], []
            for r in mine:
                raw = by[(r["round"], conc, "raw httpx")]
                over.append(r["median_ms"] - raw["median_ms"])
                rate.append(r["calls_per_s"])
                peer = by.get((r["round"], conc, "litellm Router"))
                if peer and client != "litellm Router":
                    peer_over = peer["median_ms"] - raw["median_ms"]
                    vs_peer.append(over[-1] / peer_over if peer_over > 0 else float("nan"))
            out.append(
                {
                    "concurrency": conc,
                    "client": client,
                    "rounds": len(mine),
                    "median_ms": _stats([r["median_ms"] for r in mine]),
                    "overhead_ms": _stats(over),
                    "calls_per_s": _stats(rate),
                    "overhead_x_litellm": _stats(vs_peer) if vs_peer else None,
                }
            )
    return out


def _fmt(s: dict | None, digits: int = 2) -> str:
    if not s:
        return "-"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def table(mode: str, rows: list[dict]) -> list[str]:
    lines = [
        f"| {mode} | in flight | median ms | overhead ms | calls/s | overhead × LiteLLM |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['client']} | {r['concurrency']} | {_fmt(r['median_ms'])} | {_fmt(r['overhead_ms'])} "
            f"| {_fmt(r['calls_per_s'], 0)} | {_fmt(r['overhead_x_litellm'], 3)} |"
        )
    return lines


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per client, concurrency and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 10, 50, 100])
    parser.add_argument("--without-peer", action="store_true", help="measure without LiteLLM (the results say so)")
    parser.add_argument("--out", default=str(RESULTS / "overhead.json"))
    args = parser.parse_args()
    if not args.without_peer and _version("litellm") is None:
        print(
            "error: LiteLLM is not installed (pip install 'podium[bench]'); "
            "to measure podium against raw httpx only, pass --without-peer",
            file=sys.stderr,
        )
        raise SystemExit(2)
    proc, port = start_stub()
    url = f"http://127.0.0.1:{port}/v1"
    report: dict = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "load": {"start": uptime()},
        "calls_per_round": args.calls,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "peer": None if args.without_peer else "litellm Router",
        "modes": {},
    }
    lines = [f"Load at start: `{report['load']['start']}`", ""]
    if args.without_peer:
        lines += ["PEER UNAVAILABLE (--without-peer): LiteLLM not measured; overhead is against raw httpx only.", ""]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for mode, stream in (("non-streaming", False), ("streaming", True)):
                rows = asyncio.run(measure(url, args, stream, Path(tmp)))
                summary = summarize(rows)
                report["modes"][mode] = {"rows": rows, "summary": summary}
                lines += table(mode, summary) + [""]
    finally:
        proc.terminate()
        proc.wait(5)
    report["load"]["end"] = uptime()
    lines += [
        f"Load at end: `{report['load']['end']}`",
        "",
        "Median over rounds (min–max); overhead = median latency − raw httpx's median latency in the same round "
        "and at the same concurrency.",
    ]
    report["versions"] = {"litellm": _version("litellm"), "httpx": httpx.__version__}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()

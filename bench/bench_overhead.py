"""Podium's per-call overhead versus LiteLLM's Router, against the same loopback stub server.

Overhead = the time a framework adds beyond the backend's own latency, where the backend's
latency is what a bare httpx POST to the same stub takes. All three clients call the same stub
(tests/faults/server.py in a separate process, fault ``ok``) in the same run, interleaved in
rounds so that machine load hits them alike. Podium is measured end to end: ``Engine.run`` with
the ``fixed`` coordinator (one model call, with its retries, total timeout, circuit breaker, trace
and cost accounting). LiteLLM is ``Router.acompletion`` with retries configured.

    pip install litellm            # bench only; not a podium dependency
    python bench/bench_overhead.py [--calls 200] [--rounds 5]

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
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MESSAGES = [{"role": "user", "content": "What is six times seven?"}]
Call = Callable[[], Awaitable[str]]


def start_stub() -> tuple[subprocess.Popen, int]:
    """The fault server in its own process, so its CPU time is not charged to the clients."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "faults" / "server.py")], stdout=subprocess.PIPE, text=True
    )
    port = int(proc.stdout.readline())  # type: ignore[union-attr]
    return proc, port


async def raw_client(url: str, stream: bool) -> tuple[Call, Callable[[], Awaitable[None]]]:
    """The backend's own latency: a bare httpx call (streaming: reading the SSE deltas)."""
    client = httpx.AsyncClient()
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


async def podium_client(url: str, stream: bool) -> tuple[Call, Callable[[], Awaitable[None]]]:
    from podium.engine import Engine
    from podium.pool import parse_pool

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

    async def call() -> str:
        result = await engine.run(MESSAGES[0]["content"], stream=stream)
        assert result.answer, result.reason
        return result.answer

    return call, engine.aclose


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


async def timed(call: Call, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        answer = await call()
        out.append(time.perf_counter() - t)
        assert answer == "The answer is 42.", answer
    return out


async def measure(url: str, calls: int, rounds: int, stream: bool) -> dict[str, list[float]]:
    clients = {
        "raw httpx": await raw_client(url, stream),
        "podium": await podium_client(url, stream),
        "litellm Router": await litellm_client(url, stream),
    }
    samples: dict[str, list[float]] = {name: [] for name in clients}
    for name, (call, _) in clients.items():
        await timed(call, 20)  # warm up connections, imports, caches
    for _ in range(rounds):
        for name, (call, _) in clients.items():
            samples[name] += await timed(call, calls)
    for _, close in clients.values():
        await close()
    return samples


def summarize(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    base_med = statistics.median(samples["raw httpx"])
    base_mean = statistics.fmean(samples["raw httpx"])
    rows = {}
    for name, xs in samples.items():
        med, mean = statistics.median(xs), statistics.fmean(xs)
        rows[name] = {
            "calls": len(xs),
            "median_ms": med * 1e3,
            "mean_ms": mean * 1e3,
            "p90_ms": statistics.quantiles(xs, n=10)[-1] * 1e3,
            "overhead_median_ms": (med - base_med) * 1e3,
            "overhead_mean_ms": (mean - base_mean) * 1e3,
        }
    return rows


def table(mode: str, rows: dict[str, dict[str, float]]) -> list[str]:
    lines = [
        f"| {mode} | calls | median ms | mean ms | p90 ms | overhead (median) ms | overhead (mean) ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['calls']} | {r['median_ms']:.2f} | {r['mean_ms']:.2f} | {r['p90_ms']:.2f} | "
            f"{r['overhead_median_ms']:.2f} | {r['overhead_mean_ms']:.2f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100, help="calls per client per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    proc, port = start_stub()
    url = f"http://127.0.0.1:{port}/v1"
    report: dict = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_avg": os.getloadavg()},
        "calls_per_round": args.calls,
        "rounds": args.rounds,
        "modes": {},
    }
    lines = []
    try:
        for mode, stream in (("non-streaming", False), ("streaming", True)):
            rows = summarize(asyncio.run(measure(url, args.calls, args.rounds, stream)))
            ratio = rows["podium"]["overhead_median_ms"] / rows["litellm Router"]["overhead_median_ms"]
            report["modes"][mode] = {"rows": rows, "podium_over_litellm_overhead_ratio": ratio}
            lines += table(mode, rows) + [
                "",
                f"{mode}: podium overhead / LiteLLM overhead (medians) = **{ratio:.3f}** "
                f"(target <= 0.5: {'met' if ratio <= 0.5 else 'NOT met'})",
                "",
            ]
    finally:
        proc.terminate()
        proc.wait(5)
    import litellm

    report["versions"] = {
        "litellm": getattr(litellm, "__version__", None) or _version("litellm"),
        "httpx": httpx.__version__,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "overhead.json").write_text(json.dumps(report, indent=2))
    (RESULTS / "overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()

"""Soak: 200 full runs, 20 at a time, with random faults on 30% of model calls.

Every run must end with an answer or a clean status and reason, within its deadline; no task may
hang; and after the engine closes, no client connection to the server may be left open.

Then a real ``podium serve`` under hostile clients at once: abandoned streams (pass-through and
tier), slow request heads, slow readers that hang up, and normal requests: afterwards its file
sockets and upstream connections are back to baseline (up to a few idle kept-alive ones, where a
leak would be ~95) and every run is stored.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from faults.helpers import client_sockets, model
from podium.engine import Engine, TurnDelta
from podium.pool import parse_pool
from podium.reliability import BreakerRegistry, RetryPolicy
from podium.types import Budget, RunStatus
from podium_process import PodiumServer, abandon_stream, chat_request, settle

RUNS, CONCURRENCY, FAULT_RATE, DEADLINE_S = (
    200,
    20,
    0.3,
    8.0,
)  # 2 s slack on the deadline: event-loop lag on a loaded box


class ServerProcess:
    """The fault server in its own process (like a real provider: it does not share our GIL or sockets)."""

    def __init__(self) -> None:
        script = Path(__file__).parents[1] / "faults" / "server.py"
        self.proc = subprocess.Popen(
            [sys.executable, str(script), "--seed", "7", "--rate", str(FAULT_RATE)], stdout=subprocess.PIPE, text=True
        )
        self.port = int(self.proc.stdout.readline())  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/_stats", timeout=5).json()


@pytest.fixture(scope="module")
def server():
    srv = ServerProcess()
    yield srv
    srv.proc.terminate()
    srv.proc.wait(5)


def soak_pool(url: str):
    # timeouts leave headroom for a loaded 2-core box: a healthy call must not time out
    fast = dict(timeout_s=1.2, first_byte_timeout_s=0.5, breaker_threshold=8, breaker_open_s=0.3)
    models = [
        model("a", url, "random/a", fallbacks=["b"], **fast),
        model("b", url, "random/b", fallbacks=["a"], **fast),
        model(
            "judge",
            url,
            "random/judge",
            fallbacks=["judge2"],
            roles=["verifier"],
            extra_body={"reply": "ACCEPT: ok"},
            **fast,
        ),
        model("judge2", url, "random/judge2", roles=["verifier"], extra_body={"reply": "ACCEPT: ok"}, **fast),
    ]
    config = {"name": "soak", "models": models, "defaults": {"thinker": "a", "worker": "b", "verifier": "judge"}}
    return parse_pool(yaml.safe_dump(config), "soak pool")


async def test_soak_random_faults(server: ServerProcess) -> None:
    assert client_sockets(server.port) == 0
    engine = Engine(
        soak_pool(server.url),
        "rules",
        retry=RetryPolicy(
            max_retries=1, base_delay_s=0.01, max_delay_s=0.05, retry_after_cap_s=0.1, rng=random.Random(1)
        ),
        breakers=BreakerRegistry(),
    )
    gate = asyncio.Semaphore(CONCURRENCY)
    peak = 0

    async def one(i: int):
        nonlocal peak
        async with gate:
            received: list[str] = []
            handler = lambda e: received.append(e.text) if isinstance(e, TurnDelta) else None  # noqa: E731
            started = time.perf_counter()
            result = await engine.run(
                f"question {i}", budget=Budget(max_turns=5, deadline_s=DEADLINE_S), stream=i % 2 == 0, on_event=handler
            )
            peak = max(peak, client_sockets(server.port))
            return result, received, time.perf_counter() - started

    started = time.perf_counter()
    try:
        outcomes = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(RUNS))), timeout=60)
    finally:
        await engine.aclose()
    elapsed = time.perf_counter() - started

    statuses = {}
    for result, received, took in outcomes:
        statuses[result.status] = statuses.get(result.status, 0) + 1
        assert took < DEADLINE_S + 2.0, (
            took,
            result.status,
            result.reason,
            [(t.model, t.error, t.latency_s, t.attempts) for t in result.turns],
        )
        assert result.reason, result
        if result.status in (RunStatus.ACCEPTED, RunStatus.ANSWERED):
            assert result.answer
        if result.status == RunStatus.FAILED:
            assert result.answer is None and ("failed" in result.reason or "max_turns" in result.reason)
        for turn in result.turns:
            assert (turn.error is None) == bool(turn.output) or turn.error is not None
            assert len(turn.attempts) >= turn.retries
        if received and result.turns:  # streamed text equals what the trace says was produced, never duplicated
            assert "".join(received) == "".join(t.output for t in result.turns)
    stats = server.stats()
    assert 0.2 < stats["injected"] / stats["requests"] < 0.4, stats
    failures = [
        (r.reason, r.turns[-1].attempts[:3] if r.turns else None)
        for r, _, _ in outcomes
        if r.status != RunStatus.ACCEPTED
    ][:3]
    assert statuses.get(RunStatus.ACCEPTED, 0) >= RUNS * 0.6, (statuses, failures)  # ~95% expected when unloaded
    assert 0 < peak <= 256
    assert elapsed < 60
    assert client_sockets(server.port) == 0, "client connections leaked"
    for _ in range(50):  # the server closes its ends asynchronously
        if server.stats()["open_connections"] == 0:
            break
        await asyncio.sleep(0.05)
    assert server.stats()["open_connections"] == 0, "a server handler outlived its client"


# --- the server under hostile clients ------------------------------------------------------------

ABANDONED, SLOW_HEADS, SLOW_READERS, NORMAL = 150, 40, 20, 60
KEEP_ALIVE_EXPIRY_S = 5.5  # uvicorn's keep-alive timeout and httpx's keepalive_expiry are both 5 s
IDLE_KEPT_ALIVE = 4  # upstream connections podium's pool may still keep idle for reuse


def server_pool(url: str, folder: Path) -> Path:
    slow = dict(
        timeout_s=60, first_byte_timeout_s=30, connect_timeout_s=10, max_retries=0
    )  # bursts of connects on 2 cores
    models = [
        model("drip", url, "drip", input_usd_per_mtok=1.0, **slow),
        model("ok", url, "ok", **slow),  # tiers take the cheapest
        model("judge", url, "ok/judge", roles=["verifier"], extra_body={"reply": "ACCEPT: ok"}, **slow),
    ]
    config = {
        "name": "soak-server",
        "models": models,
        "defaults": {"thinker": "ok", "worker": "ok", "verifier": "judge", "coordinator": "ok"},
    }
    path = folder / "pool.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def slow_head(port: int) -> None:
    """A request head sent a few bytes at a time, 0.5 s apart (the server's head deadline is 2 s)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for piece in [b"GET /healthz HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n", *[b"X-Slow: 1\r\n"] * 12]:
            writer.write(piece)
            await writer.drain()
            if await _closed_within(reader, 0.5):
                return
    except (ConnectionError, OSError):
        return
    finally:
        writer.close()


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        data = await asyncio.wait_for(reader.read(4096), seconds)
    except TimeoutError:
        return False
    return not data or b" 408 " in data


async def slow_reader(port: int, model: str) -> None:
    """Stream a tier's answer reading a few bytes every 0.1 s, then hang up before the end."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(chat_request(port, model))
    await writer.drain()
    for _ in range(5):
        await reader.read(16)
        await asyncio.sleep(0.1)
    writer.close()


async def normal(client: httpx.AsyncClient, i: int) -> int:
    body = {
        "model": ["ok", "podium"][i % 2],
        "stream": i % 3 == 0,
        "messages": [{"role": "user", "content": f"question {i}"}],
    }
    return (await client.post("/v1/chat/completions", json=body)).status_code


async def test_soak_server_abandoned_streams_and_slow_clients(server: ServerProcess, tmp_path: Path) -> None:
    with PodiumServer(server_pool(server.url, tmp_path), tmp_path, args=["--header-timeout", "2"]) as podium:
        # generous budgets: these check for hangs and leaks, not speed (a loaded 2-core box once took > 60 s)
        async with httpx.AsyncClient(base_url=podium.url, timeout=120) as client:
            assert await normal(client, 1) == 200
            base_sockets, base_upstream = podium.sockets(), server.stats()["open_connections"]
            base_kinds = podium.describe_fds()
            gate = asyncio.Semaphore(50)

            async def limited(coro):
                async with gate:
                    return await coro

            started = time.perf_counter()
            jobs = [limited(abandon_stream(podium.port, ["drip", "podium"][i % 2])) for i in range(ABANDONED)]
            jobs += [limited(slow_head(podium.port)) for _ in range(SLOW_HEADS)]
            jobs += [limited(slow_reader(podium.port, "drip")) for _ in range(SLOW_READERS)]
            jobs += [limited(normal(client, i)) for i in range(NORMAL)]
            results = await asyncio.wait_for(asyncio.gather(*jobs), timeout=240)
            elapsed = time.perf_counter() - started
            statuses = [r for r in results if isinstance(r, int)]
            assert statuses.count(200) == NORMAL, statuses
            # idle kept-alive connections (ours to podium, podium's to upstream) expire after 5 s; the
            # next upstream call drops podium's expired ones. What is left after that is a leak.
            await asyncio.sleep(KEEP_ALIVE_EXPIRY_S)
            assert await normal(client, 2) == 200
        # SQLite keeps one connection per worker thread (2 fds each, bounded by the thread pool): not a
        # leak, so descriptors are compared as sockets; a leak of the drip streams alone would be ~95
        sockets = await settle(podium.sockets, base_sockets + IDLE_KEPT_ALIVE)
        downstream = await settle(
            lambda: sum(n for k, n in podium.describe_fds().items() if k.startswith("tcp downstream")), 0
        )
        kinds = podium.describe_fds()
        upstream = await settle(lambda: server.stats()["open_connections"], base_upstream + IDLE_KEPT_ALIVE)
        runs = podium.runs()
    assert sockets <= base_sockets + IDLE_KEPT_ALIVE, (
        f"server sockets {base_sockets} -> {sockets}: {base_kinds} -> {kinds}"
    )
    assert downstream == 0, kinds  # every client connection closed
    assert upstream <= base_upstream + IDLE_KEPT_ALIVE, f"upstream connections {base_upstream} -> {upstream}"
    expected = 1 + ABANDONED + SLOW_READERS + NORMAL + 1  # every chat request that reached the server
    assert len(runs) == expected, f"{expected - len(runs)} traces lost"
    drips = (ABANDONED + 1) // 2 + SLOW_READERS  # a drip stream never ends: all of these were cut by their client
    assert sum(status == "interrupted" for _, status in runs) >= drips
    assert elapsed < 200

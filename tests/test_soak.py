"""Soak: 200 full runs, 20 at a time, with random faults on 30% of model calls.

Every run must end with an answer or a clean status and reason, within its deadline; no task may
hang; and after the engine closes, no client connection to the server may be left open.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest
import yaml

from faults.helpers import client_sockets, model
from faults.server import FaultServer
from podium.engine import Engine, TurnDelta
from podium.pool import parse_pool
from podium.reliability import BreakerRegistry, RetryPolicy
from podium.types import Budget, RunStatus

RUNS, CONCURRENCY, FAULT_RATE, DEADLINE_S = 200, 20, 0.3, 8.0


@pytest.fixture(scope="module")
def server():
    with FaultServer(seed=7, random_rate=FAULT_RATE) as srv:
        yield srv


def soak_pool(url: str):
    fast = dict(timeout_s=0.6, first_byte_timeout_s=0.2, breaker_threshold=8, breaker_open_s=0.3)
    models = [
        model("a", url, "random/a", fallbacks=["b"], **fast),
        model("b", url, "random/b", fallbacks=["a"], **fast),
        model("judge", url, "random/judge", fallbacks=["judge2"], roles=["verifier"], extra_body={"reply": "ACCEPT: ok"}, **fast),
        model("judge2", url, "random/judge2", roles=["verifier"], extra_body={"reply": "ACCEPT: ok"}, **fast),
    ]
    config = {"name": "soak", "models": models, "defaults": {"thinker": "a", "worker": "b", "verifier": "judge"}}
    return parse_pool(yaml.safe_dump(config), "soak pool")


async def test_soak_random_faults(server: FaultServer) -> None:
    assert client_sockets(server.port) == 0
    engine = Engine(soak_pool(server.url), "rules", retry=RetryPolicy(max_retries=1, base_delay_s=0.01, max_delay_s=0.05,
                    retry_after_cap_s=0.1, rng=random.Random(1)), breakers=BreakerRegistry())
    gate = asyncio.Semaphore(CONCURRENCY)
    peak = 0

    async def one(i: int):
        nonlocal peak
        async with gate:
            received: list[str] = []
            handler = lambda e: received.append(e.text) if isinstance(e, TurnDelta) else None  # noqa: E731
            started = time.perf_counter()
            result = await engine.run(f"question {i}", budget=Budget(max_turns=5, deadline_s=DEADLINE_S),
                                      stream=i % 2 == 0, on_event=handler)
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
        assert took < DEADLINE_S + 1.0, (took, result.status, result.reason, [(t.model, t.error, t.latency_s, t.attempts) for t in result.turns])
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
    injected = [fault for _, fault in server.log if fault != "ok"]
    assert 0.2 < len(injected) / len(server.log) < 0.4, (len(injected), len(server.log))
    assert statuses.get(RunStatus.ACCEPTED, 0) >= RUNS * 0.85, statuses
    assert 0 < peak <= 256
    assert elapsed < 60
    for _ in range(50):  # the server side closes its ends asynchronously
        if server.open_connections == 0:
            break
        await asyncio.sleep(0.05)
    assert client_sockets(server.port) == 0, "client connections leaked"
    assert server.open_connections == 0

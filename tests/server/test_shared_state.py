"""Shared serving state on a real Redis: one limit, one budget and one breaker across replicas, and
serving on local state (never an error) while Redis is down."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from local_servers import RedisServer
from podium.pool import parse_pool
from podium.reliability import BreakerRegistry, BreakerState
from podium.state import LocalState, open_state
from podium.state.redis_state import RedisState

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def redis_url(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> str:
    if redis_server.proc is None:
        redis_server.start()
    redis_server.flush()
    monkeypatch.setenv("PODIUM_REDIS_URL", redis_server.url)
    monkeypatch.setenv("PODIUM_REDIS_TIMEOUT", "10")  # a loaded CI machine must not fall back by accident
    return redis_server.url


async def test_open_state_is_local_without_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PODIUM_REDIS_URL", raising=False)
    state = open_state()
    assert isinstance(state, LocalState)
    assert [await state.take("k", 0.001, 2) == 0 for _ in range(3)] == [True, True, False]


async def test_two_replicas_share_one_token_bucket(redis_url: str) -> None:
    a, b = RedisState(redis_url), RedisState(redis_url)
    waits = [await (a if i % 2 else b).take("rate:alice", 0.001, 5) for i in range(12)]
    assert a.fallbacks == b.fallbacks == 0
    assert [w == 0 for w in waits].count(True) == 5  # 5 in total, not 5 per replica
    assert all(w > 100 for w in waits[5:])  # the next token is 1000 s away at this rate
    assert a.fallbacks == b.fallbacks == 0
    await a.aclose()
    await b.aclose()


async def test_reserve_window_add_and_cache(redis_url: str) -> None:
    state = RedisState(redis_url)
    assert (await state.reserve("tpm:k", 600, 1000, 60)).ok
    denied = await state.reserve("tpm:k", 600, 1000, 60)
    assert not denied.ok and denied.total == 600 and 0 < denied.retry_s <= 60
    assert await state.add("spend:k", 0.25, 3600) == 0.25 and await state.add("spend:k", 0.5, 3600) == 0.75
    assert await state.total("spend:k") == 0.75 and await state.total("spend:none") == 0
    await state.cache_set("decision:abc", '{"model": "m"}', 30)
    assert await state.cache_get("decision:abc") == '{"model": "m"}' and await state.cache_get("decision:x") is None
    await state.aclose()


BUDGET_SCRIPT = """
import asyncio, sys
from podium.state.redis_state import RedisState

async def main():
    state = RedisState(sys.argv[1])
    granted = 0
    for _ in range(60):
        granted += (await state.reserve("spend:team", 0.125, 6.25, 86400)).ok
    print(granted)
    await state.aclose()

asyncio.run(main())
"""


def test_two_processes_spend_one_budget(redis_url: str) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", BUDGET_SCRIPT, redis_url], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    granted = [int(p.communicate(timeout=60)[0]) for p in procs]
    assert sum(granted) == 50, granted  # a 6.25 USD budget in 0.125 USD reservations: 50 in total, not per process


async def test_redis_down_serves_locally_then_recovers(redis_server: RedisServer, redis_url: str) -> None:
    state = RedisState(redis_url)
    assert await state.take("rate:k", 0.001, 1) == 0
    assert await state.take("rate:k", 0.001, 1) > 0  # the shared bucket is empty
    redis_server.stop()
    try:
        assert await state.take("rate:k", 0.001, 1) == 0  # answered from local state, no exception
        assert state.fallbacks == 1 and state.down_since is not None
        assert (await state.reserve("spend:k", 1, 2, 60)).ok and await state.cache_get("c") is None
        assert state.fallbacks == 3
    finally:
        redis_server.start()
    await asyncio.sleep(1.1)  # RETRY_S: Redis is tried again (a fresh one: it kept nothing)
    assert await state.take("rate:k", 0.001, 1) == 0
    other = RedisState(redis_url)
    assert await other.take("rate:k", 0.001, 1) > 0  # back on the shared bucket
    assert state.down_since is None and state.fallbacks == 3
    await state.aclose()
    await other.aclose()


BREAKER_POOL = """
name: b
models:
  - name: up
    backend: openai
    base_url: http://127.0.0.1:9/v1
    model: m
    breaker_threshold: 2
    breaker_open_s: 60
"""


def test_breaker_opened_by_one_replica_is_open_in_the_other(redis_url: str, tmp_path: Path) -> None:
    from podium.errors import BackendError

    spec = parse_pool(BREAKER_POOL, "t").models["up"]
    a, b = BreakerRegistry(None), BreakerRegistry(None)
    seen_by_b = b.get(spec)
    assert seen_by_b.state == BreakerState.CLOSED
    opener = a.get(spec)
    for _ in range(2):
        opener.record(BackendError("connection refused", retryable=True))
    assert opener.state == BreakerState.OPEN
    import time

    time.sleep(0.3)  # SYNC_S
    assert b.get(spec).state == BreakerState.OPEN and b.get(spec).seconds_left() > 50
    opener.record(None)  # the endpoint answered again on replica a
    time.sleep(0.3)
    assert b.get(spec).state == BreakerState.CLOSED
    saved = json.loads(str(a.shared.client.hget("podium:breakers", opener.key)))
    assert saved["state"] == "closed"

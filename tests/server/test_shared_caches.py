"""The response cache and the routing-decision cache on a real Redis (``PODIUM_REDIS_URL``): two
processes share a hit, TTL and size bounds hold across replicas, and Redis killed mid-use leaves
each process serving from its local cache (a warning and a fallback count, never an error)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import redis

from local_servers import RedisServer
from podium.backends.cached import ResponseCache, with_response_cache
from podium.learned.decision_cache import DecisionCache, SharedDecisionCache, open_decision_cache
from podium.pool import ResponseCacheSpec, parse_pool
from podium.state.caches import FALLBACKS, RedisLRU
from podium.types import ChatMessage, Completion, CompletionRequest

REPO = Path(__file__).resolve().parents[2]
POOL = """
name: cache-test
models:
  - {name: solver, backend: scripted, replies: ["391"], roles: [worker], cache: {ttl_s: 60, max_entries: 10}}
"""

# One replica: answer a request through the pool model's response cache; the backend records each
# real call in CALLS (a file), so the other process can tell a shared hit from a call.
REPLICA = """
import asyncio, sys
from pathlib import Path
from podium.backends.cached import with_response_cache
from podium.pool import parse_pool
from podium.types import ChatMessage, Completion, CompletionRequest

class Counting:
    async def complete(self, request):
        with Path(sys.argv[1]).open("a") as f:
            f.write("call\\n")
        return Completion(text="391", model="solver", prompt_tokens=9, completion_tokens=1, cost_usd=0.001)
    async def aclose(self):
        pass

async def main():
    spec = parse_pool(sys.argv[2], "pool").config.models[0]
    caches = {}
    backend = with_response_cache(Counting(), spec, caches)
    done = await backend.complete(CompletionRequest(messages=[ChatMessage(role="user", content="17*23?")]))
    print("cached" if done.cached else "called", done.text)
    await caches.pop("\\0redis").aclose()

asyncio.run(main())
"""


@pytest.fixture
def redis_url(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> str:
    if redis_server.proc is None:
        redis_server.start()
    redis_server.flush()
    monkeypatch.setenv("PODIUM_REDIS_URL", redis_server.url)
    monkeypatch.setenv("PODIUM_REDIS_TIMEOUT", "10")  # a loaded machine must not fall back by accident
    return redis_server.url


def test_two_processes_share_a_response_cache_hit(redis_url: str, tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    outputs = [
        subprocess.run(
            [sys.executable, "-c", REPLICA, str(calls), POOL], env=env, capture_output=True, text=True, timeout=120
        )
        for _ in range(2)
    ]
    assert [o.stdout.strip() for o in outputs] == ["called 391", "cached 391"], [o.stderr[-800:] for o in outputs]
    assert calls.read_text().count("call") == 1  # the second process answered from the first one's entry


def completion(i: int) -> Completion:
    return Completion(text=f"answer {i}", model="m", prompt_tokens=3, completion_tokens=2, cost_usd=0.5)


async def test_response_cache_ttl_and_lru_bound_across_replicas(redis_url: str) -> None:
    a_lru, b_lru = RedisLRU(redis_url), RedisLRU(redis_url)
    spec = ResponseCacheSpec(ttl_s=0.5, max_entries=3)
    a, b = ResponseCache(spec, shared=a_lru, space="m"), ResponseCache(spec, shared=b_lru, space="m")
    for i in range(3):
        await (a if i % 2 else b).aput(f"k{i}", completion(i))
    assert (await b.aget("k0")) == completion(0)  # k0 is now the most recently used
    await a.aput("k3", completion(3))  # over the bound of 3: the least recently used (k1) goes
    assert await b.aget("k1") is None and (await a.aget("k0")) is not None and (await b.aget("k3")) is not None
    client = redis.Redis.from_url(redis_url)
    assert client.zcard("podium:cache:m:order") == 3
    assert len(client.keys("podium:cache:m:k*")) == 3
    await asyncio.sleep(0.6)
    assert await a.aget("k3") is None and await b.aget("k0") is None  # expired on both
    assert a.entries == {} == b.entries  # nothing was kept locally while Redis answered
    await a_lru.aclose()
    await b_lru.aclose()


async def test_response_cache_keeps_serving_when_redis_is_killed(
    redis_server: RedisServer, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    spec = parse_pool(POOL, "pool").config.models[0]
    calls: list[str] = []

    class Counting:
        async def complete(self, request: CompletionRequest) -> Completion:
            calls.append(request.messages[0].content)
            return completion(len(calls))

        async def aclose(self) -> None:
            return None

    caches: dict[str, object] = {}
    backend = with_response_cache(Counting(), spec, caches)  # type: ignore[arg-type]
    ask = CompletionRequest(messages=[ChatMessage(role="user", content="17*23?")])
    first = await backend.complete(ask)
    assert not first.cached and (await backend.complete(ask)).cached and len(calls) == 1
    before = FALLBACKS.fallbacks
    redis_server.stop()  # mid-use
    try:
        again = await backend.complete(ask)  # the entry was in Redis: a miss now, answered by the backend
        assert not again.cached and len(calls) == 2
        assert (await backend.complete(ask)).cached and len(calls) == 2  # the local cache took over
        assert FALLBACKS.fallbacks > before
        assert "Redis unreachable" in caplog.text
    finally:
        redis_server.start()
        await backend.aclose()


DECIDER = """
import sys, numpy as np
from podium.learned.decision_cache import open_decision_cache
cache = open_decision_cache("t", threshold=0.95, max_size=8, ttl_s=60)
vec = np.array([1.0, 0.0, 0.0, 0.02])
if sys.argv[1] == "put":
    cache.put(vec, np.array([0.5, -1.0], dtype=np.float32), b"ctx")
else:
    hit = cache.get(np.array([1.0, 0.01, 0.0, 0.0]), b"ctx")
    miss = cache.get(np.array([1.0, 0.01, 0.0, 0.0]), b"other")
    print(type(cache).__name__, None if hit is None else hit.tolist(), miss, cache.shared)
"""


def test_two_processes_share_a_decision_cache_hit(redis_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    run = [sys.executable, "-c", DECIDER]
    put = subprocess.run([*run, "put"], env=env, capture_output=True, text=True, timeout=120)
    assert put.returncode == 0, put.stderr[-800:]
    got = subprocess.run([*run, "get"], env=env, capture_output=True, text=True, timeout=120)
    assert got.stdout.strip().split(maxsplit=1) == ["SharedDecisionCache", "[0.5, -1.0] None 1"], got.stderr[-800:]


def test_decision_cache_ttl_and_size_bound_across_replicas(redis_url: str) -> None:
    a = SharedDecisionCache(redis_url, "bounds", max_size=3, ttl_s=0.5)
    b = SharedDecisionCache(redis_url, "bounds", max_size=3, ttl_s=0.5)
    basis = np.eye(5)
    for i in range(5):
        a.put(basis[i], {"model": f"m{i}"})
    assert redis.Redis.from_url(redis_url).xlen("podium:cache:decisions:bounds") == 3  # the stream is capped
    assert b.get(basis[0]) is None and b.get(basis[4]) == {"model": "m4"}  # the oldest went
    assert len(b) == 3 and (b.hits, b.misses) == (1, 1)  # the miss read the 3 entries a replica added
    a.put(basis[1] + 0.01, {"model": "late"})
    c = SharedDecisionCache(redis_url, "bounds", max_size=3, ttl_s=0.5)
    import time

    time.sleep(0.6)
    assert c.get(basis[1]) is None and c.get(basis[4]) is None  # older than the TTL: not taken
    assert len(c) == 0


def test_decision_cache_keeps_serving_when_redis_is_killed(redis_server: RedisServer, redis_url: str) -> None:
    cache = open_decision_cache("down", threshold=0.99)
    assert isinstance(cache, SharedDecisionCache)
    cache.put(np.ones(4), np.zeros(2))
    redis_server.stop()
    try:
        cache.put(np.arange(4.0), np.ones(2))  # Redis gone: kept locally
        assert cache.get(np.arange(4.0)) is not None and cache.get(-np.ones(4)) is None
        assert cache.stream.outage.down
    finally:
        redis_server.start()


def test_decision_cache_is_local_without_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PODIUM_REDIS_URL", raising=False)
    assert type(open_decision_cache()) is DecisionCache

"""Per-deployment rpm/tpm counted across replicas: with ``PODIUM_REDIS_URL`` (a real redis-server on
127.0.0.1) two replicas (two BackendSets, each with its own counters) together get exactly the
deployment's rpm; without it each counts alone; with Redis unreachable each serves on local counts."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
from test_deployment_routing import Caller, dep, pool, served_by

from faults.server import FaultServer
from local_servers import RedisServer, free_port

pytest.importorskip("redis", reason="redis is in the 'redis' extra")


@pytest.fixture
def shared_redis(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> str:
    if redis_server.proc is None:
        redis_server.start()
    redis_server.flush()
    monkeypatch.setenv("PODIUM_REDIS_URL", redis_server.url)
    return redis_server.url


async def two_replicas(fault_server: FaultServer, tag: str, calls: int, **limits: int) -> dict[str, int]:
    """``calls`` calls alternating between two replicas; how many each deployment served."""
    deps = [dep(f"{tag}-a", "ok", **limits), dep(f"{tag}-b", "ok", input_usd_per_mtok=1.0)]
    replicas = [Caller(pool(fault_server.url, deps, routing="cost")) for _ in range(2)]
    for i in range(calls):
        await replicas[i % 2].call()
    for replica in replicas:
        await replica.aclose()
    return served_by(fault_server, [f"{tag}-a", f"{tag}-b"])


async def test_two_replicas_share_the_deployment_rpm_and_tpm(fault_server: FaultServer, shared_redis: str) -> None:
    assert await two_replicas(fault_server, "srpm", 8, rpm=3) == {"srpm-a": 3, "srpm-b": 5}
    assert await two_replicas(fault_server, "stpm", 4, tpm=10) == {"stpm-a": 1, "stpm-b": 3}  # a call > 10 tokens


REPLICA = """
import asyncio, sys, yaml
from podium.backends import BackendSet
from podium.pool import parse_pool
from podium.reliability import BreakerRegistry, Layers, ModelCall
from podium.types import ChatMessage, CompletionRequest
url, calls = sys.argv[1], int(sys.argv[2])
deps = [{"name": "pa", "model": "ok/pa", "rpm": 3}, {"name": "pb", "model": "ok/pb", "input_usd_per_mtok": 1.0}]
entry = {"name": "gpt", "backend": "openai", "base_url": url, "max_retries": 0, "routing": "cost", "deployments": deps}
pool = parse_pool(yaml.safe_dump({"name": "p", "models": [entry], "defaults": {"worker": "gpt"}}), "p")
async def main():
    layers, ask = Layers(BackendSet(), BreakerRegistry()), [ChatMessage(role="user", content="6 * 7?")]
    for _ in range(calls):
        assert await ModelCall(layers, [pool.get("gpt")], CompletionRequest(messages=ask)).run() is not None
asyncio.run(main())
"""


def test_two_processes_share_the_deployment_rpm(fault_server: FaultServer, shared_redis: str) -> None:
    env = {**os.environ, "PODIUM_REDIS_URL": shared_redis}
    args = [sys.executable, "-c", REPLICA, fault_server.url, "4"]
    procs = [subprocess.Popen(args, env=env) for _ in range(2)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert served_by(fault_server, ["pa", "pb"]) == {"pa": 3, "pb": 5}


async def test_without_redis_each_replica_counts_alone(fault_server: FaultServer, monkeypatch) -> None:
    monkeypatch.delenv("PODIUM_REDIS_URL", raising=False)
    assert await two_replicas(fault_server, "lrpm", 8, rpm=3) == {"lrpm-a": 6, "lrpm-b": 2}


async def test_redis_down_serves_on_local_counts(fault_server: FaultServer, monkeypatch, caplog) -> None:
    monkeypatch.setenv("PODIUM_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    monkeypatch.setenv("PODIUM_REDIS_TIMEOUT", "0.5")
    with caplog.at_level(logging.WARNING, logger="podium.state"):
        assert await two_replicas(fault_server, "drpm", 8, rpm=3) == {"drpm-a": 6, "drpm-b": 2}
    assert any("Redis unreachable" in r.getMessage() for r in caplog.records)

"""Replicas behind a balancer: `podium serve` processes sharing a real Redis (limits, breakers) and a
real PostgreSQL (traces). One key's limit holds once in total, not once per replica; a breaker one
replica opens is open on the other; Redis dying mid-load loses no request."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from local_servers import PostgresServer, RedisServer, free_port
from podium.server.auth import hash_key
from podium.traces.store import Store
from podium_process import PodiumServer

POOL = Path(__file__).parents[1] / "pools" / "server.yaml"
ASK = [{"role": "user", "content": "What is 17 * 23?"}]
KEY = {"Authorization": "Bearer sk-team"}


class SlowStartServer(PodiumServer):
    """A server given more time to come up: N workers each import podium and migrate the store."""

    def _wait_healthy(self, timeout: float = 120.0) -> None:
        try:
            super()._wait_healthy(timeout)
        except RuntimeError:
            self.stop()  # never leave a server (and its workers) behind
            raise


def write_setup(folder: Path, *, rpm: float, burst: int) -> tuple[Path, Path]:
    """A keys file (one key, ``team``) and the test pool plus ``dead-endpoint``: an endpoint nobody listens on."""
    keys = folder / "keys.yaml"
    entry = {"name": "team", "sha256": hash_key("sk-team"), "rate_limit": {"requests_per_minute": rpm, "burst": burst}}
    keys.write_text(yaml.safe_dump({"keys": [entry]}))
    pool = yaml.safe_load(POOL.read_text())
    pool["models"].append(
        {
            "name": "dead-endpoint",
            "backend": "openai",
            "base_url": f"http://127.0.0.1:{free_port()}/v1",
            "model": "m",
            "api_key_env": "PODIUM_REPLICA_TEST_KEY",
            "max_retries": 0,
            "breaker_threshold": 1,
            "breaker_open_s": 120,
            "fallbacks": ["eu-checker"],
            "input_usd_per_mtok": 90,
            "output_usd_per_mtok": 90,
            "roles": [],
        }
    )
    path = folder / "pool.yaml"
    path.write_text(yaml.safe_dump(pool))
    return keys, path


@pytest.fixture
def shared(redis_server: RedisServer, postgres_server: PostgresServer) -> dict[str, str]:
    """The environment of replicas sharing one Redis and one PostgreSQL trace store."""
    if redis_server.proc is None:
        redis_server.start()
    redis_server.flush()
    return {
        "PODIUM_REDIS_URL": redis_server.url,
        "PODIUM_TRACES_URL": postgres_server.fresh_schema(),
        "PODIUM_REPLICA_TEST_KEY": "sk-replica-test",
        "PODIUM_REDIS_TIMEOUT": "10",  # a loaded CI machine must not fall back by accident
    }


@pytest.fixture
def replicas(tmp_path: Path, shared: dict[str, str], request: pytest.FixtureRequest) -> Iterator[list[PodiumServer]]:
    rpm, burst = getattr(request, "param", (0.6, 6))
    keys, pool = write_setup(tmp_path, rpm=rpm, burst=burst)
    servers: list[PodiumServer] = []
    try:
        for name in ("a", "b"):
            home = tmp_path / name
            home.mkdir()
            servers.append(SlowStartServer(pool, home, env=shared, args=["--keys", str(keys)]))
        yield servers
    finally:
        for server in servers:
            server.stop()


async def chat(client: httpx.AsyncClient, url: str, model: str = "eu-solver") -> httpx.Response:
    body = {"model": model, "messages": ASK}
    return await client.post(f"{url}/v1/chat/completions", json=body, headers=KEY, timeout=60)


async def test_one_key_limit_holds_once_across_two_replicas(replicas: list[PodiumServer], shared: dict) -> None:
    urls = itertools.cycle([s.url for s in replicas])
    async with httpx.AsyncClient() as client:
        codes = [(await chat(client, next(urls))).status_code for _ in range(16)]
    assert codes.count(200) == 6 and codes.count(429) == 10, codes  # burst 6 in total, not 6 per replica
    assert codes[:6] == [200] * 6
    runs = Store.open(shared["PODIUM_TRACES_URL"]).runs()  # both replicas' traces, in one store
    assert len(runs) == 6 and {r["owner"] for r in runs} == {"team"}


async def test_trace_made_on_one_replica_is_served_by_the_other(replicas: list[PodiumServer]) -> None:
    async with httpx.AsyncClient() as client:
        made = await chat(client, replicas[0].url)
        assert made.status_code == 200
        trace_id = made.json()["podium"]["trace_id"]
        got = await client.get(f"{replicas[1].url}/v1/traces/{trace_id}", headers=KEY)
    assert got.status_code == 200 and got.json()["id"] == trace_id


async def test_breaker_opened_by_one_replica_is_seen_by_the_other(
    replicas: list[PodiumServer], shared: dict[str, str]
) -> None:
    a, b = replicas
    async with httpx.AsyncClient() as client:
        first = await chat(client, a.url, "dead-endpoint")  # connection refused: the breaker opens, eu-checker answers
        assert first.status_code == 200
        await asyncio.sleep(0.5)
        second = await chat(client, b.url, "dead-endpoint")
        assert second.status_code == 200
    store = Store.open(shared["PODIUM_TRACES_URL"])
    attempts = {r["id"]: store.run(r["id"])["turns"][0]["attempts"] for r in store.runs()}
    ids = [first.json()["podium"]["trace_id"], second.json()["podium"]["trace_id"]]
    assert "circuit open" not in " ".join(attempts[ids[0]])  # replica a called the endpoint and failed
    assert "circuit open" in " ".join(attempts[ids[1]])  # replica b never called it: a's breaker is shared


@pytest.mark.parametrize("replicas", [(60000, 1000)], indirect=True)
async def test_killing_redis_mid_load_loses_no_request(replicas: list[PodiumServer], redis_server: RedisServer) -> None:
    urls = itertools.cycle([s.url for s in replicas])
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=8)) as client:
        load = asyncio.gather(*(chat(client, next(urls)) for _ in range(60)))
        task = asyncio.ensure_future(load)
        while redis_server.keys() < 1:  # the first requests have gone through Redis
            await asyncio.sleep(0.02)
        redis_server.stop()  # mid-load
        codes = [r.status_code for r in await task]
        metrics = [(await client.get(f"{s.url}/metrics", headers=KEY)).text for s in replicas]
    assert codes == [200] * 60
    fallbacks = [
        float(line.split()[-1])
        for text in metrics
        for line in text.splitlines()
        if line.startswith("podium_shared_state_fallbacks ")
    ]
    assert len(fallbacks) == 2 and sum(fallbacks) > 0, fallbacks
    logs = " ".join(s.log_path.read_text() for s in replicas)
    assert "Redis unreachable" in logs and "Traceback" not in logs


def test_workers_share_one_limit(tmp_path: Path, shared: dict[str, str]) -> None:
    """``podium serve --workers 2``: two processes behind one port, one limit between them."""
    keys, pool = write_setup(tmp_path, rpm=0.6, burst=5)
    home = tmp_path / "workers"
    home.mkdir()
    with SlowStartServer(pool, home, env=shared, args=["--keys", str(keys), "--workers", "2"]) as server:
        children = [
            p for p in os.listdir("/proc") if p.isdigit() and _ppid(p) == server.proc.pid and b"spawn" in _cmdline(p)
        ]
        assert len(children) == 2
        codes = [
            httpx.post(
                f"{server.url}/v1/chat/completions",
                json={"model": "eu-solver", "messages": ASK},
                headers=KEY,
                timeout=60,
            ).status_code
            for _ in range(12)
        ]
    assert codes.count(200) == 5 and codes.count(429) == 7, codes


def _ppid(pid: str) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


async def test_one_key_tokens_per_minute_hold_once_across_two_replicas(
    replicas: list[PodiumServer], tmp_path: Path
) -> None:
    async with httpx.AsyncClient() as client:
        probe = await chat(client, replicas[0].url)  # what one run costs in tokens
        assert probe.status_code == 200
        tokens = probe.json()["usage"]["total_tokens"]
        keys = tmp_path / "keys.yaml"
        entries = yaml.safe_load(keys.read_text())["keys"]
        entries[0]["rate_limit"]["tokens_per_minute"] = int(2.5 * tokens)  # the probe plus two runs
        keys.write_text(yaml.safe_dump({"keys": entries}))  # both replicas reload it on their next request
        await asyncio.sleep(1.1)  # a new mtime even on a coarse-grained file system
        urls = itertools.cycle([replicas[1].url, replicas[0].url])
        codes = [(await chat(client, next(urls))).status_code for _ in range(5)]
    # the probe and two runs fill the key's minute on both replicas together; counted per replica, all
    # five would pass (neither replica alone reaches 2.5 runs' tokens before its third run)
    assert codes == [200, 200, 429, 429, 429], codes

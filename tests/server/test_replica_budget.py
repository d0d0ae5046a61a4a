"""One spend budget across two `podium serve` replicas sharing a real Redis and a real PostgreSQL:
a key whose budget pays for N runs gets N runs in total, however its requests are spread over the
replicas and however many are in flight at once (not N per replica, nor N plus what was in flight)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from local_servers import PostgresServer, RedisServer
from podium.server.auth import hash_key
from podium.traces.store import Store
from podium_process import PodiumServer

POOL = Path(__file__).parents[1] / "pools" / "server.yaml"
ASK = [{"role": "user", "content": "What is 17 * 23?"}]
RUNS = 5  # what the budget pays for


class Replica(PodiumServer):
    """A server given more time to come up on a loaded machine (it imports podium and migrates the store)."""

    def _wait_healthy(self, timeout: float = 120.0) -> None:
        try:
            super()._wait_healthy(timeout)
        except RuntimeError:
            self.stop()  # never leave a server behind
            raise


def keys_file(folder: Path, max_usd: float) -> Path:
    """Two keys: ``probe`` (no budget, to price one run) and ``team`` (a total budget of ``max_usd``)."""
    big = {"requests_per_minute": 60000, "burst": 1000}
    entries = [
        {"name": "probe", "sha256": hash_key("sk-probe"), "rate_limit": big},
        {
            "name": "team",
            "sha256": hash_key("sk-team"),
            "rate_limit": big,
            "budget": {"max_usd": max_usd, "period": "total"},
        },
    ]
    path = folder / "keys.yaml"
    path.write_text(yaml.safe_dump({"keys": entries}))
    return path


@pytest.fixture
def two_replicas(
    tmp_path: Path, redis_server: RedisServer, postgres_server: PostgresServer
) -> Iterator[tuple[list[PodiumServer], Path, str]]:
    if redis_server.proc is None:
        redis_server.start()
    redis_server.flush()
    env = {
        "PODIUM_REDIS_URL": redis_server.url,
        "PODIUM_TRACES_URL": postgres_server.fresh_schema(),
        "PODIUM_REDIS_TIMEOUT": "10",
    }
    keys = keys_file(tmp_path, 1.0)
    servers: list[PodiumServer] = []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            servers.append(Replica(POOL, tmp_path / name, env=env, args=["--keys", str(keys)]))
        yield servers, keys, env["PODIUM_TRACES_URL"]
    finally:
        for server in servers:
            server.stop()


async def drive(client: httpx.AsyncClient, url: str, granted: list[str], refused: list[int]) -> None:
    """Ask until the budget says no: 200s are granted, a 429 (budget held by runs in flight) is retried."""
    body = {"model": "eu-solver", "messages": ASK}
    while True:
        r = await client.post(
            f"{url}/v1/chat/completions", json=body, headers={"Authorization": "Bearer sk-team"}, timeout=60
        )
        if r.status_code == 200:
            granted.append(url)
        elif r.status_code == 429:
            await asyncio.sleep(0.02)
        else:
            assert r.status_code == 400 and r.json()["error"]["code"] == "budget_exceeded", r.text
            refused.append(r.status_code)
            return


async def test_one_spend_budget_across_two_replicas(two_replicas: tuple[list[PodiumServer], Path, str]) -> None:
    servers, keys, traces_url = two_replicas
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=16)) as client:
        probe = await client.post(
            f"{servers[0].url}/v1/chat/completions",
            json={"model": "eu-solver", "messages": ASK},
            headers={"Authorization": "Bearer sk-probe"},
            timeout=60,
        )
        cost = float(probe.headers["x-podium-cost-usd"])
        assert cost > 0
        keys_file(keys.parent, (RUNS - 0.5) * cost)  # pays for RUNS runs: the (RUNS+1)th starts over budget
        await asyncio.sleep(1.2)  # each replica re-reads a changed keys file within a second
        granted: list[str] = []
        refused: list[int] = []
        clients = [drive(client, s.url, granted, refused) for s in servers for _ in range(4)]
        await asyncio.gather(*clients)
    assert len(granted) == RUNS, granted  # not RUNS per replica, nor RUNS plus the requests in flight
    assert len(refused) == 8
    runs = [r for r in Store.open(traces_url).runs() if r["owner"] == "team"]
    assert len(runs) == RUNS  # the store agrees: RUNS runs were charged to the key


async def test_refused_and_streamed_requests_settle_their_holds(
    two_replicas: tuple[list[PodiumServer], Path, str],
) -> None:
    """A request refused after admission gives its hold back (else the key would be 'busy' for minutes);
    a streamed run settles its hold with its cost like a plain one."""
    servers, keys, _ = two_replicas
    url, team = servers[0].url, {"Authorization": "Bearer sk-team"}
    async with httpx.AsyncClient() as client:
        probe = await client.post(
            f"{url}/v1/chat/completions",
            json={"model": "eu-solver", "messages": ASK},
            headers={"Authorization": "Bearer sk-probe"},
        )
        keys_file(keys.parent, 2.5 * float(probe.headers["x-podium-cost-usd"]))  # pays for 3 runs
        await asyncio.sleep(1.2)
        unknown = await client.post(f"{url}/v1/chat/completions", json={"model": "nope", "messages": ASK}, headers=team)
        assert unknown.status_code == 404  # admitted (all the budget held: no run priced yet), then refused
        plain = await client.post(
            f"{url}/v1/chat/completions", json={"model": "eu-solver", "messages": ASK}, headers=team
        )
        assert plain.status_code == 200, plain.text  # not 429 budget_busy: the refused request's hold is gone
        body = {"model": "eu-solver", "messages": ASK, "stream": True}
        streamed = await client.post(f"{servers[1].url}/v1/chat/completions", json=body, headers=team)
        assert streamed.status_code == 200 and "[DONE]" in streamed.text
        codes = [
            (
                await client.post(
                    f"{url}/v1/chat/completions", json={"model": "eu-solver", "messages": ASK}, headers=team
                )
            )
            for _ in range(2)
        ]
    assert [c.status_code for c in codes] == [200, 400], [c.text for c in codes]  # the stream was charged: 3 runs
    assert codes[1].json()["error"]["code"] == "budget_exceeded"

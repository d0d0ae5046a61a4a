"""Spend holds (podium.state.spend): one budget for runs in flight, on local state and on a real
Redis shared by two replicas. A run holds its expected cost until it settles; a hold nobody settles
lapses; the counter is seeded once from the trace store."""

from __future__ import annotations

import asyncio

import pytest

from local_servers import RedisServer
from podium.state import LocalState
from podium.state.base import SharedState
from podium.state.redis_state import RedisState
from podium.state.spend import SpendGate


@pytest.fixture(params=["local", "redis"])
def states(request: pytest.FixtureRequest) -> list[SharedState]:
    """Two replicas' states: one LocalState twice, or two clients of one real Redis."""
    if request.param == "local":
        local = LocalState()
        return [local, local]
    server: RedisServer = request.getfixturevalue("redis_server")
    if server.proc is None:
        server.start()
    server.flush()
    return [RedisState(server.url), RedisState(server.url)]


async def test_holds_admit_one_budget_across_replicas(states: list[SharedState]) -> None:
    reads: list[str] = []

    def read_spend(key: str, since: float) -> float:
        reads.append(key)
        return 0.25  # the store already holds $0.25 of this period's runs

    a, b = (SpendGate(s, read_spend) for s in states)
    first, claim = await a.claim("team", 1.0, 0.0, None, 0.0)
    assert first is not None and claim.committed == 0.25 and first.amount == 0.75  # unpriced: all that is left
    busy, claim = await b.claim("team", 1.0, 0.0, None, 0.0)
    assert busy is None and claim.committed == 0.25 and claim.held == 0.75  # held by the run in flight
    await a.settle(first, 0.2)
    holds = [await (a, b)[i % 2].claim("team", 1.0, 0.0, None, 0.0) for i in range(4)]
    granted = [h for h, _ in holds if h is not None]
    assert len(granted) == 3 and all(h.amount == 0.2 for h in granted)  # 0.45 + 3 x 0.2 >= 1: the 4th waits
    assert holds[3][1].committed == pytest.approx(0.45) and holds[3][1].held == pytest.approx(0.6)
    for hold in granted[:2]:
        await b.settle(hold, 0.2)
    await a.settle(granted[2], None)  # refused after admission: nothing spent
    left, claim = await a.claim("team", 1.0, 0.0, None, 0.0)
    assert left is not None and claim.committed == pytest.approx(0.85)
    await a.settle(left, 0.2)
    spent, claim = await b.claim("team", 1.0, 0.0, None, 0.0)
    assert spent is None and claim.committed == pytest.approx(1.05) and claim.held == 0
    assert reads == ["team"]  # seeded from the store once, for both replicas


async def test_a_hold_nobody_settles_lapses(states: list[SharedState], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("podium.state.spend.HOLD_TTL_S", 0.3)
    a, b = (SpendGate(s, lambda key, since: 0.0) for s in states)
    orphan, _ = await a.claim("team", 1.0, 0.0, None, 0.0)  # its replica dies mid-run
    assert orphan is not None and (await b.claim("team", 1.0, 0.0, None, 0.0))[0] is None
    await asyncio.sleep(0.4)
    assert (await b.claim("team", 1.0, 0.0, None, 0.0))[0] is not None

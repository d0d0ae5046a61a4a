"""A model call cancelled again and again while it cleans up (what Starlette's cancel scope does to a
streaming response whose client disconnected) must still close its upstream response: no connection
may stay checked out of the shared pool. Against the real fault server on 127.0.0.1."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from faults.helpers import client_sockets
from faults.server import FaultServer
from podium.backends.openai import OpenAIBackend
from podium.pool import ModelSpec
from podium.types import ChatMessage, CompletionRequest

CALLS = 20
REQUEST = CompletionRequest(messages=[ChatMessage(role="user", content="hi")])


@pytest.fixture(scope="module")
def upstream():
    with FaultServer(stream_delay_s=0.05) as srv:
        yield srv


async def cancel_repeatedly(tasks: list[asyncio.Task], times: int) -> None:
    for _ in range(times):
        for task in tasks:
            task.cancel()
        await asyncio.sleep(0)


async def settle(client: httpx.AsyncClient, port: int, timeout: float = 5.0) -> tuple[list, int, int]:
    """(connections not idle, idle ones, open client sockets to ``port``), polled until only idle
    (kept-alive, reusable) connections are left or ``timeout`` passed (the box may be loaded)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        pooled = client._transport._pool.connections  # type: ignore[attr-defined]
        busy = [c for c in pooled if not c.is_idle()]
        idle, sockets = len(pooled) - len(busy), client_sockets(port)
        if (not busy and sockets <= idle) or asyncio.get_running_loop().time() > deadline:
            return busy, idle, sockets
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("fault", ["ok", "drip", "slow_first_byte:3"])
@pytest.mark.parametrize("cancels", [2, 200])
async def test_repeatedly_cancelled_calls_release_their_connections(
    upstream: FaultServer, fault: str, cancels: int
) -> None:
    spec = ModelSpec(
        name="m", backend="openai", base_url=upstream.url, model=fault, timeout_s=60, extra_body={"reply": "w " * 200}
    )
    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))
    backend = OpenAIBackend(spec, client)

    async def consume() -> None:
        async for _ in backend.stream(REQUEST):
            pass

    tasks = [asyncio.ensure_future(consume()) for _ in range(CALLS)]
    tasks += [
        asyncio.ensure_future(backend.complete(REQUEST.model_copy(update={"max_tokens": 9}))) for _ in range(CALLS)
    ]
    await asyncio.sleep(0.3)  # mid-stream (or, slow_first_byte, still waiting for the head)
    await cancel_repeatedly(tasks, cancels)
    await asyncio.gather(*tasks, return_exceptions=True)
    try:
        busy, idle, sockets = await settle(client, upstream.port)  # finished calls keep theirs alive for reuse: fine
    finally:
        await client.aclose()
    assert not busy, f"{len(busy)} connections stuck (checked out for good) in the pool: {busy[:3]}"
    assert sockets <= idle, f"{sockets - idle} upstream connections left open"

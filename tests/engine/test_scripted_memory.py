"""The scripted backend keeps a bounded window of the requests it received, so long runs stay flat."""

from __future__ import annotations

import asyncio
import gc

from podium.backends.scripted import CALLS_KEPT, ScriptedBackend
from podium.pool import ModelSpec
from podium.types import ChatMessage, CompletionRequest


def live_requests() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, CompletionRequest))


def test_requests_kept_are_bounded_and_replies_still_cycle() -> None:
    backend = ScriptedBackend(ModelSpec(name="m", backend="scripted", replies=["a", "b", "c"]))

    async def go(n: int) -> list[str]:
        out = []
        for i in range(n):
            request = CompletionRequest(messages=[ChatMessage(role="user", content=f"q{i}")], max_tokens=8)
            out.append((await backend.complete(request)).text)
        return out

    before = live_requests()
    texts = asyncio.run(go(3 * CALLS_KEPT + 1))
    assert texts[:4] == ["a", "b", "c", "a"] and texts[-1] == "a"  # cycling counts every call, not the window
    assert backend.n_calls == 3 * CALLS_KEPT + 1
    assert len(backend.calls) == CALLS_KEPT
    assert backend.calls[-1].messages[0].content == f"q{3 * CALLS_KEPT}"  # the most recent are the ones kept
    assert live_requests() - before <= CALLS_KEPT + 5  # the rest were freed

"""A model call's total time limit (:func:`podium.reliability.within`; a stream's in the guard layer)
behaves as ``asyncio.timeout`` does: its own expiry becomes a BackendTimeout, anyone else's
cancellation stays a cancellation, and the task is left owing no cancellation either way."""

from __future__ import annotations

import asyncio

import pytest

from podium.errors import BackendTimeout
from podium.reliability import within


async def slow(seconds: float = 10.0) -> str:
    await asyncio.sleep(seconds)
    return "late"


async def test_a_call_past_its_limit_is_a_timeout_and_the_task_owes_nothing() -> None:
    with pytest.raises(BackendTimeout, match=r"within 0\.05s \(total timeout\)"):
        await within(0.05, slow)
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0.01)  # and the task is not cancelled later


async def test_a_call_in_time_answers_and_its_timer_is_gone() -> None:
    async def quick() -> str:
        await asyncio.sleep(0)
        return "ok"

    assert await within(0.05, quick) == "ok"
    assert await within(None, quick) == "ok"
    assert await slow(0.1) == "late"  # the limit's timer would have cancelled this sleep


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    task = asyncio.create_task(within(5.0, slow))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_outside_and_timer_cancellations_together_stay_a_cancellation() -> None:
    async def cancelled_by_someone_else_too() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:  # the limit's; someone else cancels the task as well
            me = asyncio.current_task()
            assert me is not None
            me.cancel()
            raise
        return "never"

    task = asyncio.create_task(within(0.02, cancelled_by_someone_else_too))
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_call_that_swallows_the_expiry_answers_and_the_task_owes_nothing() -> None:
    async def stubborn() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "kept going"
        return "never"

    assert await within(0.02, stubborn) == "kept going"
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_a_stream_that_swallows_the_expiry_times_out_and_the_task_owes_nothing() -> None:
    from podium.pool import ModelSpec
    from podium.reliability import BreakerRegistry
    from podium.reliability.guard import GuardBackend
    from podium.types import CompletionRequest, StreamDelta

    class Stubborn:
        """Keeps going through the limit's cancellation once, then waits again."""

        spec = ModelSpec(name="stubborn", backend="scripted", timeout_s=0.02)

        async def complete(self, request: CompletionRequest) -> None:
            raise AssertionError("streamed only")

        async def stream(self, request: CompletionRequest):  # type: ignore[no-untyped-def]
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                pass
            yield StreamDelta(text="kept going")
            await asyncio.sleep(10)
            yield StreamDelta(text="never")

        async def aclose(self) -> None:
            pass

    got = []
    with pytest.raises(BackendTimeout):
        async for delta in GuardBackend(Stubborn(), BreakerRegistry()).stream(CompletionRequest(messages=[])):
            got.append(delta.text)
    assert got == ["kept going"]  # the limit had run out: raised before waiting again
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0

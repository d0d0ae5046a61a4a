"""Cancellation that cannot leak connections: upstream I/O runs in tasks that are cancelled at most once.

httpx/httpcore clean up after a cancelled request (closing the response, returning or dropping its
pooled connection) in ``except``/``finally`` blocks that themselves await. A *second* cancellation
landing in that cleanup interrupts it, and the connection stays checked out of the shared pool for
good ("ACTIVE" forever); a few hundred of those and every request to every HTTP model fails. Callers
do cancel repeatedly: Starlette's cancel scope re-cancels a streaming response's task on every loop
iteration after a client disconnects, and a deadline can follow a disconnect.

So upstream I/O through httpx never runs in the caller's task (a non-streamed call on podium's own
transport does: its cleanup never awaits, see ``LeanTransport.exchange``). :func:`isolated` runs a
coroutine in its own task and :func:`pump` runs an async iterator in its own task; however often
the caller is cancelled, that task is cancelled exactly once and finishes its cleanup undisturbed. :func:`close_response` closes a
response from a task of its own, so even a cancellation of the closing task cannot interrupt it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import httpx

T = TypeVar("T")
_running: set[asyncio.Future[Any]] = set()  # the loop holds tasks weakly; these must finish their cleanup
_END = object()


def _spawn(awaitable: Awaitable[T]) -> asyncio.Future[T]:
    task = asyncio.ensure_future(awaitable)
    _running.add(task)
    task.add_done_callback(_running.discard)
    return task


async def isolated(awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` in its own task; a cancellation of ours cancels it once (see the module doc)."""
    task = _spawn(awaitable)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.cancel()
        raise


async def pump(items: AsyncIterator[T]) -> AsyncIterator[T]:
    """Iterate ``items`` in its own task, one item ahead (see the module doc).

    Exceptions of ``items`` are raised here; when we stop early (closed, cancelled) the pumping
    task is cancelled exactly once and closes ``items`` itself.
    """
    queue: asyncio.Queue[tuple[Any, Exception | None]] = asyncio.Queue(maxsize=1)  # (item or _END, error)

    async def run() -> None:
        try:
            async for item in items:
                await queue.put((item, None))
            await queue.put((_END, None))
        except Exception as exc:
            await queue.put((_END, exc))
        finally:
            await items.aclose()  # type: ignore[attr-defined]

    task = _spawn(run())
    try:
        while True:
            item, error = await queue.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        if not task.done():
            task.cancel()


async def close_response(response: httpx.Response) -> None:
    """Close ``response`` from a task of its own, awaited through a shield: a cancellation of the
    caller stops the waiting, never the close."""
    if not response.is_closed:
        await asyncio.shield(_spawn(response.aclose()))

"""What a run tells its consumers as it goes, and the async iterator that delivers it.

Events (:class:`TurnStarted`, :class:`TurnDelta`, :class:`TurnFinished`, :class:`RunFinished`) let a
CLI show progress, a server stream tokens, and a store persist the trace. :class:`EngineRun` is a run
in progress (what :meth:`podium.engine.Engine.iter` returns)::

    async with engine.iter(query) as run:
        async for event in run:
            ...
    print(run.result.answer)

Leaving the ``async with`` block before the run finished (``break``, an exception, a cancelled
task) stops the run: it ends with status ``failed``, reason ``interrupted``, and its
:class:`RunFinished` still reaches every handler, so a store keeps what it did.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from .types import Role, RunResult, Turn


@dataclass
class TurnStarted:
    """A turn (or workflow step) began: who acts, in which role, and why."""

    turn: int
    role: Role
    model: str
    reason: str
    final: bool = False  # workflow runs: this step's output is the answer (a server may stream it live)


@dataclass
class TurnDelta:
    """A piece of a streaming turn's text (``stream=True``), from pool model ``model``."""

    turn: int
    role: Role
    model: str
    text: str


@dataclass
class TurnFinished:
    """A turn ended, answered or failed, as recorded in the trace."""

    turn: Turn


@dataclass
class RunFinished:
    """The run ended (always the last event, also for a stopped run)."""

    result: RunResult


Event = TurnStarted | TurnDelta | TurnFinished | RunFinished
EventHandler = Callable[[Event], Awaitable[None] | None]
Feed = Callable[[Event], None]
Runner = Callable[[Feed], Coroutine[Any, Any, RunResult]]

_unwinding: set[asyncio.Task[RunResult]] = set()  # stopped runs finishing their cleanup (the loop holds tasks weakly)


class EngineRun:
    """A run in progress: an async iterator of its events, ``result`` once it has finished.

    ``runner`` is started in its own task on entering the ``async with`` block and is given the
    handler that feeds this iterator. An exception of the run (a config problem found mid-run) is
    raised by the iteration.
    """

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self._events: asyncio.Queue[Event | None] | None = None  # made when iterated (run() needs none)
        self._task: asyncio.Task[RunResult] | None = None
        self._stopped = False
        self.result: RunResult | None = None

    def _handle(self, event: Event) -> None:
        self._keep(event)
        assert self._events is not None
        self._events.put_nowait(event)

    def _keep(self, event: Event) -> None:
        if isinstance(event, RunFinished):
            self.result = event.result

    async def to_end(self) -> RunResult:
        """Run to the end in the caller's own task, without iterating (what ``Engine.run`` does):
        the events go to the run's handlers only, and a cancelled caller stops the run as leaving
        the ``async with`` block would."""
        if self._task is not None:
            raise RuntimeError("this run was already started with `async with`")
        self.result = await self.runner(self._keep)
        return self.result

    async def __aenter__(self) -> Self:
        events = self._events = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self.runner(self._handle))
        self._task.add_done_callback(lambda _task: events.put_nowait(None))
        return self

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        if self._task is None or self._events is None:
            raise RuntimeError("iterate a run inside `async with engine.iter(...) as run:`")
        event = await self._events.get()
        if event is not None:
            return event
        self._events.put_nowait(None)  # iterating again stays finished
        if not self._task.cancelled() and (exc := self._task.exception()) is not None:
            raise exc
        raise StopAsyncIteration

    def stop(self) -> None:
        """Stop the run if it is still going; it unwinds (emitting its RunFinished) in the background.
        Cancels once however often asked: a second cancellation could cut that cleanup short."""
        task = self._task
        if task is None or task.done() or self._stopped:
            return
        self._stopped = True
        task.cancel()
        _unwinding.add(task)
        task.add_done_callback(_unwinding.discard)

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        task = self._task
        if task is None:
            return
        if task.done():
            if not task.cancelled():
                task.exception()  # retrieved: the iteration raised it, or the caller is leaving anyway
            return
        self.stop()
        # wait for that cleanup through a shield: a caller cancelled again (Starlette keeps
        # re-cancelling after a disconnect) stops waiting, while the run still finishes unwinding
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                raise
        except Exception:  # the run failed while stopping; the caller's own exit reason comes first
            if exc is None:
                raise

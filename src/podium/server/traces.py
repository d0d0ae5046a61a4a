"""Where the server keeps its runs: the SQLite trace store, each run owned by the API key that made it.

``GET /v1/traces/{id}`` reads back through :meth:`Traces.get` with the caller's key name as
owner, so a key sees its own runs and no other's. ``PODIUM_TRACES=off`` keeps nothing (the
route then answers 404 and says why). Writes go to a background :class:`~podium.traces.writer.TraceWriter`
(batched, off the event loop) or, with ``PODIUM_TRACE_WRITER=process`` (what ``podium serve`` picks
when it has a core to spare, :func:`server_writer`), to a writer process driven from the event loop
(:mod:`podium.traces.writer_loop`); a request is answered once its run is committed, so a crash
after an answer cannot lose that answer's trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from ..cores import usable_cores
from ..traces.writer_loop import LoopTraceWriter
from ..types import RunResult

log = logging.getLogger("podium.server")


class Traces:
    """Persist and fetch server runs (``path=None``: the store's default, ``$PODIUM_HOME/podium.db``)."""

    def __init__(self, path: str | Path | None = None, *, writer: str | None = None) -> None:
        from ..traces.store import Store, traces_setting
        from ..traces.writer import open_writer, writer_kind

        self.enabled = traces_setting() != "off"
        self.store = Store.open(path) if self.enabled else None
        # writer: "thread" or "process" (default: $PODIUM_TRACE_WRITER, else thread; `podium serve`: server_writer)
        kind = writer_kind(writer)
        self.writer: Any = None
        if self.store is not None:
            self.writer = LoopTraceWriter(self.store) if kind == "process" else open_writer(self.store, kind)
        self._handoff = _Handoff()

    async def record(self, result: RunResult, owner: str) -> None:
        """Store ``result`` as owned by ``owner``; a storage failure is logged, never fails the request."""
        if self.writer is None:
            return
        try:
            if isinstance(self.writer, LoopTraceWriter):
                await self.writer.record(result, source="server", owner=owner)
            else:
                await self._handoff.wait(self.writer.submit(result, source="server", owner=owner))
        except Exception as exc:  # the answer matters more than its trace
            log.error("could not store trace %s: %s", result.run_id, exc)

    async def aclose(self) -> None:
        """Commit what is queued and stop the writer (server shutdown)."""
        if isinstance(self.writer, LoopTraceWriter):
            await self.writer.aclose()
        else:
            await asyncio.to_thread(self.close)

    def close(self) -> None:
        """:meth:`aclose`, when no event loop runs."""
        if self.writer is not None:
            self.writer.close()

    def record_now(self, result: RunResult, owner: str) -> None:
        """Synchronous :meth:`record`, for a run cancelled while it unwinds."""
        if self.store is not None:
            try:
                self.store.record(result, source="server", owner=owner)
            except Exception as exc:
                log.error("could not store trace %s: %s", result.run_id, exc)

    async def get(self, run_id: str, owner: str) -> dict[str, Any] | None:
        """The run with its turns if ``owner`` made it, else None."""
        if self.store is None:
            return None
        return await asyncio.to_thread(self.store.run, run_id, owner=owner)

    def spend(self, owner: str, since: float) -> float:
        """USD the runs of ``owner`` cost since ``since`` (Unix seconds), the coordinator's calls included;
        0 with storage off (a spend budget then counts this process's runs only)."""
        if self.store is None:
            return 0.0
        with self.store._read() as conn:
            row = conn.execute(
                "SELECT COALESCE(SUM(cost_usd + orchestration_cost_usd), 0) FROM runs WHERE owner = ? AND started_at >= ?",
                (owner, since),
            ).fetchone()
        return float(row[0])

    @property
    def location(self) -> str:
        if self.store is None:
            return "off (PODIUM_TRACES=off)"
        return self.store.location


class _Handoff:
    """The writer's commits, back on the event loop: an asyncio future per run, resolved in batches.

    ``asyncio.wrap_future`` wakes the loop once per commit (a system call from the writer thread) and,
    if the waiting request is cancelled, cancels the writer's future, which then fails the writer's
    ``set_result`` (and stopped its thread). Here the writer's futures are never cancelled, and a
    batch of commits wakes the loop once.
    """

    def __init__(self) -> None:
        self._done: deque[tuple[asyncio.Future[str], Future[str]]] = deque()
        self._scheduled = False  # a drain is due on the loop (set by the writer's thread, cleared by the loop)
        self._loop: asyncio.AbstractEventLoop | None = None

    def wait(self, committed: Future[str]) -> asyncio.Future[str]:
        """An asyncio future with ``committed``'s outcome; cancelling it leaves ``committed`` alone."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._scheduled = loop, False
        waiter: asyncio.Future[str] = loop.create_future()
        committed.add_done_callback(lambda f: self._landed(loop, waiter, f))
        return waiter

    def _landed(self, loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[str], committed: Future[str]) -> None:
        self._done.append((waiter, committed))  # appended before the flag is read: the drain cannot miss it
        if not self._scheduled or loop is not self._loop:
            self._scheduled = True
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        self._scheduled = False  # cleared before draining: a commit landing now schedules another drain
        here = asyncio.get_running_loop()
        while self._done:
            waiter, committed = self._done.popleft()
            if waiter.get_loop() is here:
                _settle(waiter, committed)
            else:  # a waiter of another loop (one app served from two loops in turn): settled there
                with contextlib.suppress(RuntimeError):
                    waiter.get_loop().call_soon_threadsafe(_settle, waiter, committed)


def _settle(waiter: asyncio.Future[str], committed: Future[str]) -> None:
    if waiter.done():  # the request was cancelled meanwhile
        return
    exc = committed.exception()
    if exc is not None:
        waiter.set_exception(exc)
    else:
        waiter.set_result(committed.result())


def server_writer(workers: int = 1) -> str:
    """The trace writer ``podium serve`` runs: ``$PODIUM_TRACE_WRITER`` when set; else a writer process
    when the cores this process may use outnumber the server's workers (the rows and SQL of every
    run then go to a core the event loop does not use: 1.07× the thread's requests per second on two
    cores, docs/performance.md "Session 10"), else the thread (no core to spare: a process only adds work)."""
    from ..traces.writer import WRITER_ENV

    chosen = os.environ.get(WRITER_ENV)
    if chosen:
        return chosen
    return "process" if usable_cores() > workers else "thread"

"""Where the server keeps its runs: the SQLite trace store, each run owned by the API key that made it.

``GET /v1/traces/{id}`` reads back through :meth:`Traces.get` with the caller's key name as
owner, so a key sees its own runs and no other's. ``PODIUM_TRACES=off`` keeps nothing (the
route then answers 404 and says why). Writes go to a background :class:`~podium.traces.writer.TraceWriter`
(batched, off the event loop; ``PODIUM_TRACE_WRITER=process``: a writer process instead, see
:mod:`podium.traces.writer_process`); a request is answered once its run is committed, so a crash
after an answer cannot lose that answer's trace.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from ..types import RunResult

log = logging.getLogger("podium.server")


class Traces:
    """Persist and fetch server runs (``path=None``: the store's default, ``$PODIUM_HOME/podium.db``)."""

    def __init__(self, path: str | Path | None = None) -> None:
        from ..traces.store import Store, traces_setting
        from ..traces.writer import open_writer

        self.enabled = traces_setting() != "off"
        self.store = Store.open(path) if self.enabled else None
        self.writer = open_writer(self.store) if self.store is not None else None  # $PODIUM_TRACE_WRITER

    async def record(self, result: RunResult, owner: str) -> None:
        """Store ``result`` as owned by ``owner``; a storage failure is logged, never fails the request."""
        if self.writer is None:
            return
        try:
            await asyncio.wrap_future(self.writer.submit(result, source="server", owner=owner))
        except Exception as exc:  # the answer matters more than its trace
            log.error("could not store trace %s: %s", result.run_id, exc)

    def close(self) -> None:
        """Commit what is queued and stop the writer (server shutdown)."""
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

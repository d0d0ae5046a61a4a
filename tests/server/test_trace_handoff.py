"""The server's hand-off of a run to the trace writer (podium.server.traces.Traces.record): a request
cancelled while it waits for its trace's commit must not break the writer for the requests after it,
and every waiting request is answered once its run is committed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from podium.server.traces import Traces
from podium.types import RunResult, RunStatus


def run(i: int) -> RunResult:
    return RunResult(query=f"q{i} " + "x" * 2000, answer=f"a{i}", status=RunStatus.ANSWERED)


@pytest.fixture
def traces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PODIUM_TRACES", "full")
    monkeypatch.delenv("PODIUM_TRACE_WRITER", raising=False)
    store = Traces(tmp_path / "t.db")
    yield store
    store.close()


async def test_a_cancelled_wait_does_not_break_the_writer(traces: Traces) -> None:
    for round_ in range(5):
        busy = [asyncio.create_task(traces.record(run(100 * round_ + i), "k")) for i in range(30)]
        await asyncio.sleep(0)  # every task now waits for its commit
        for task in busy[::2]:
            task.cancel()
        await asyncio.wait_for(asyncio.gather(*busy, return_exceptions=True), 10)
        later = run(100 * round_ + 99)
        await asyncio.wait_for(traces.record(later, "k"), 10)  # hung forever when the writer thread had died
        assert (await traces.get(later.run_id, "k")) is not None


async def test_every_waiter_is_answered_after_its_commit(traces: Traces) -> None:
    runs = [run(i) for i in range(200)]
    await asyncio.wait_for(asyncio.gather(*(traces.record(r, "k") for r in runs)), 30)
    for r in runs[::20]:
        assert (await traces.get(r.run_id, "k")) is not None

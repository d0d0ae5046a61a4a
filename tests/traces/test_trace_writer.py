"""Traces off the hot path: batched background writes, flushed on close, and no acknowledged run
lost when the server is killed (SIGKILL) or stopped (SIGTERM) in the middle of a load."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import threading
from pathlib import Path

import httpx
import pytest
import yaml

from podium.engine import Engine
from podium.pool import parse_pool
from podium.traces.store import Store
from podium.traces.writer import TraceWriter
from podium.types import RunResult, RunStatus
from podium_process import PodiumServer

POOL = {"name": "w", "models": [{"name": "echo", "backend": "scripted", "replies": ["!sleep 0.02\nok"]}]}


def result(i: int) -> RunResult:
    return RunResult(run_id=f"run_{i:06d}", query=f"q{i}", answer="a", status=RunStatus.ANSWERED, reason="ok", turns=[])


def count(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM runs").fetchone()[0]


def test_submissions_from_many_threads_are_batched_and_all_committed(tmp_path: Path) -> None:
    writer = TraceWriter(Store.open(tmp_path / "t.db"))
    futures = []

    def submit(start: int) -> None:
        futures.extend(writer.submit(result(i), source="t") for i in range(start, start + 250))

    threads = [threading.Thread(target=submit, args=(k * 250,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.flush()
    assert all(f.done() for f in futures)
    assert sorted(f.result() for f in futures) == [f"run_{i:06d}" for i in range(1000)]
    assert count(tmp_path / "t.db") == 1000
    assert writer.batches < 1000  # batched: fewer transactions than runs
    writer.close()
    late = writer.submit(result(5000))  # after close: stored at once, not dropped
    assert late.result(timeout=5) == "run_005000" and count(tmp_path / "t.db") == 1001


def test_engine_background_handler_flushes_every_run(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "e.db")
    handler = store.handler(source="bench", background=True)
    engine = Engine(parse_pool(yaml.safe_dump(POOL), "w"), "fixed")

    async def go() -> None:
        await asyncio.gather(*(engine.run(f"q{i}", on_event=handler) for i in range(60)))
        await engine.aclose()

    asyncio.run(go())
    handler.close()  # type: ignore[attr-defined]
    assert count(tmp_path / "e.db") == 60


async def _load(url: str, acknowledged: list[str], stop: asyncio.Event) -> None:
    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            i = 0
            while not stop.is_set():
                i += 1
                body = {"model": "echo", "messages": [{"role": "user", "content": f"question {i}"}]}
                try:
                    r = await http.post("/v1/chat/completions", json=body)
                except httpx.HTTPError:
                    return  # the server is gone
                if r.status_code == 200:
                    acknowledged.append(r.headers["x-podium-trace-id"])

    await asyncio.gather(*(client() for _ in range(20)))


def _children(pid: int) -> set[int]:
    return {int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()}


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return True


async def _kill_mid_load(tmp_path: Path, sig: int, writer: str = "process") -> tuple[list[str], set[str]]:
    pool = tmp_path / "pool.yaml"
    pool.write_text(yaml.safe_dump(POOL))
    server = PodiumServer(pool, tmp_path, env={"PODIUM_TRACE_WRITER": writer})
    children: set[int] = set()
    acknowledged: list[str] = []
    stop = asyncio.Event()
    try:
        load = asyncio.ensure_future(_load(server.url, acknowledged, stop))
        while len(acknowledged) < 100:  # well into the load
            await asyncio.sleep(0.05)
        children = _children(server.proc.pid)
        assert len(children) == (1 if writer == "process" else 0), children
        server.proc.send_signal(sig)
        await asyncio.to_thread(server.proc.wait, 30)
        stop.set()
        await load
    finally:
        server.stop()
    for _ in range(200):  # the writer process commits what it has read, then exits: no orphan left
        if all(_gone(pid) for pid in children):
            break
        await asyncio.sleep(0.05)
    assert all(_gone(pid) for pid in children)
    with sqlite3.connect(tmp_path / "podium.db") as conn:
        stored = {r[0] for r in conn.execute("SELECT id FROM runs")}
    return acknowledged, stored


@pytest.mark.parametrize("writer", ["process", "thread"])
async def test_kill_9_mid_load_loses_no_acknowledged_run(tmp_path: Path, writer: str) -> None:
    acknowledged, stored = await _kill_mid_load(tmp_path, signal.SIGKILL, writer)
    assert len(acknowledged) >= 100
    assert set(acknowledged) <= stored, f"{len(set(acknowledged) - stored)} acknowledged runs lost"


async def test_sigterm_mid_load_stores_every_answered_run(tmp_path: Path) -> None:
    acknowledged, stored = await _kill_mid_load(tmp_path, signal.SIGTERM)
    assert len(acknowledged) >= 100
    assert set(acknowledged) <= stored


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_a_cancelled_future_does_not_stop_the_writer(tmp_path: Path, kind: str) -> None:
    # A caller may cancel the future it was given (a request that gave up waiting): the writer must
    # still store that run and go on with the next ones, not die on InvalidStateError.
    from podium.traces.writer_process import ProcessTraceWriter

    store = Store.open(tmp_path / "c.db")
    writer = TraceWriter(store) if kind == "thread" else ProcessTraceWriter(store)
    try:
        cancelled = writer.submit(result(1))
        assert cancelled.cancel()
        later = [writer.submit(result(i)) for i in range(2, 6)]
        assert [f.result(timeout=30) for f in later] == [f"run_{i:06d}" for i in range(2, 6)]
    finally:
        writer.close()
    assert count(tmp_path / "c.db") == 5  # the cancelled run is stored all the same


def test_the_server_writer_is_a_process_only_with_a_core_to_spare(monkeypatch: pytest.MonkeyPatch) -> None:
    from podium.cores import usable_cores
    from podium.server.traces import server_writer

    monkeypatch.delenv("PODIUM_TRACE_WRITER", raising=False)
    cores = usable_cores()
    assert cores >= 1
    assert server_writer(1) == ("process" if cores > 1 else "thread")
    assert server_writer(cores) == "thread"  # a worker on every core: no core for a writer
    monkeypatch.setenv("PODIUM_TRACE_WRITER", "thread")
    assert server_writer(1) == "thread"  # the environment decides when set
    monkeypatch.setenv("PODIUM_TRACE_WRITER", "process")
    assert server_writer(cores) == "process"


async def test_podium_serve_writes_traces_from_a_child_when_a_core_is_spare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from podium.cores import usable_cores

    monkeypatch.delenv("PODIUM_TRACE_WRITER", raising=False)
    pool = tmp_path / "pool.yaml"
    pool.write_text(yaml.safe_dump(POOL))
    server = PodiumServer(pool, tmp_path)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            body = {"model": "echo", "messages": [{"role": "user", "content": "hello"}]}
            response = await http.post("/v1/chat/completions", json=body)
        assert response.status_code == 200
        children = _children(server.proc.pid)
        assert len(children) == (1 if usable_cores() > 1 else 0), children
        for pid in children:
            assert b"podium.traces.writer_child" in Path(f"/proc/{pid}/cmdline").read_bytes()
    finally:
        server.stop()
    with sqlite3.connect(tmp_path / "podium.db") as conn:
        assert conn.execute("SELECT id FROM runs").fetchone()[0] == response.headers["x-podium-trace-id"]

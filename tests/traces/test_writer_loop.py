"""The writer process driven from the event loop (podium.traces.writer_loop, what `podium serve`
stores its runs with): every run committed as the store writes it, in batches, with no thread in
this process; secrets known only to the parent scrubbed; no run lost when the child is killed,
keeps dying or cannot start; a cancelled wait still stores its run; a second event loop is served."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from podium.scrub import register_env
from podium.traces.store import Store
from podium.traces.writer_child import WriterProcessError
from podium.traces.writer_loop import LoopTraceWriter
from podium.types import ChatMessage, RunResult, RunStatus, Turn


def result(i: int, text: str = "a") -> RunResult:
    turn = Turn(
        turn=1, role="worker", model="m", messages=[ChatMessage(role="user", content=f"q{i} {text}")], output=text
    )
    return RunResult(
        run_id=f"run_{i:06d}", query=f"q{i}", answer=text, status=RunStatus.ANSWERED, reason="ok", turns=[turn]
    )


def ids(first: int, last: int) -> list[str]:
    return [f"run_{i:06d}" for i in range(first, last)]


async def until(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def record_all(writer: LoopTraceWriter, first: int, last: int) -> list[str]:
    return list(await asyncio.gather(*(writer.record(result(i), source="t", owner="k") for i in range(first, last))))


def test_every_run_committed_as_the_store_writes_it_with_no_thread(store_url: str, tmp_path: Path) -> None:
    store = Store.open(store_url)
    writer = LoopTraceWriter(store)
    threads: list[int] = []
    runs = [result(i) for i in range(600)]

    async def go() -> list[str]:
        stored = await asyncio.gather(*(writer.record(r, source="t", owner="k") for r in runs))
        threads.append(threading.active_count())
        await writer.aclose()
        return list(stored)

    before = threading.active_count()
    assert asyncio.run(go()) == ids(0, 600)
    assert threads == [before]  # the loop talks to the child itself
    assert 2 <= writer.batches < 600  # batched
    reference = Store.open(tmp_path / "ref.db")
    reference.record(runs[7], source="t", owner="k")
    assert store.run("run_000007") == reference.run("run_000007")
    assert len(store.runs(limit=1000)) == 600
    assert writer._child is None and not writer.in_process
    assert asyncio.run(writer.record(result(5000))) == "run_005000"  # after close: stored at once, not dropped
    assert store.run("run_005000") is not None


def test_a_secret_only_the_parent_knows_never_reaches_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = LoopTraceWriter(Store.open(tmp_path / "s.db"))
    secret = "plainlookingvalue-" + os.urandom(6).hex()

    async def go() -> None:
        await writer.record(result(0))  # the child's environment is taken now, before the secret exists
        monkeypatch.setenv("PODIUM_TEST_LOOP_PLAIN_NAME", secret)  # neither name nor value looks like a key
        register_env(["PODIUM_TEST_LOOP_PLAIN_NAME"])  # as a pool's api_key_env
        await writer.record(result(1, f"the key is {secret}"))
        await writer.aclose()

    asyncio.run(go())
    stored = Store.open(tmp_path / "s.db").run("run_000001")
    assert stored is not None and "[REDACTED]" in stored["answer"] and secret not in str(stored)
    for file in tmp_path.iterdir():
        assert secret.encode() not in file.read_bytes(), file


def test_a_killed_child_is_restarted_and_its_runs_sent_again(tmp_path: Path) -> None:
    errors: list[Exception] = []
    writer = LoopTraceWriter(Store.open(tmp_path / "k.db"), on_error=errors.append)

    async def go() -> list[str]:
        first = await record_all(writer, 0, 50)
        child = writer._child
        assert child is not None
        os.kill(child.proc.pid, signal.SIGSTOP)  # the next runs reach the child and are never acknowledged
        second = asyncio.gather(*(writer.record(result(i)) for i in range(50, 300)))
        await until(lambda: writer._pending)
        os.kill(child.proc.pid, signal.SIGKILL)
        stored = first + list(await asyncio.wait_for(second, 60))
        assert writer.restarts == 1 and writer._child is not child and not writer.in_process
        await writer.aclose()
        return stored

    assert asyncio.run(go()) == ids(0, 300)
    assert len(errors) == 1 and isinstance(errors[0], WriterProcessError), errors
    assert "restarted it" in str(errors[0])
    assert len(Store.open(tmp_path / "k.db").runs(limit=1000)) == 300


def test_a_child_that_keeps_dying_hands_over_to_this_process(tmp_path: Path) -> None:
    errors: list[Exception] = []
    writer = LoopTraceWriter(Store.open(tmp_path / "f.db"), on_error=errors.append, max_restarts=1)

    async def go() -> tuple[list[str], str]:
        await writer.record(result(0))
        child = writer._child
        assert child is not None
        os.kill(child.proc.pid, signal.SIGSTOP)
        waiting = asyncio.gather(*(writer.record(result(i)) for i in range(1, 100)))
        await until(lambda: writer._pending)
        os.kill(child.proc.pid, signal.SIGKILL)
        await until(lambda: writer._child not in (None, child))
        replacement = writer._child
        assert replacement is not None
        os.kill(replacement.proc.pid, signal.SIGKILL)  # a second death with no acknowledgement between
        stored = list(await asyncio.wait_for(waiting, 60))
        later = await writer.record(result(100))  # later runs too
        await writer.aclose()
        return stored, later

    stored, later = asyncio.run(go())
    assert stored == ids(1, 100) and later == "run_000100"
    assert writer.in_process and len(errors) == 2, errors
    assert "-9 2 times in a row; storing traces in this process" in str(errors[-1])
    assert len(Store.open(tmp_path / "f.db").runs(limit=1000)) == 101


def test_a_child_that_cannot_start_stores_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    errors: list[Exception] = []
    writer = LoopTraceWriter(Store.open(tmp_path / "n.db"), on_error=errors.append)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))

    async def go() -> list[str]:
        stored = await record_all(writer, 0, 20)
        await writer.aclose()
        return stored

    assert asyncio.run(go()) == ids(0, 20)
    assert writer.in_process and len(errors) == 1 and "could not be started" in str(errors[0])
    assert len(Store.open(tmp_path / "n.db").runs(limit=100)) == 20


def test_a_cancelled_wait_still_stores_its_run_and_the_rest_go_on(tmp_path: Path) -> None:
    writer = LoopTraceWriter(Store.open(tmp_path / "c.db"))

    async def go() -> str:
        tasks = [asyncio.create_task(writer.record(result(i))) for i in range(40)]
        await asyncio.sleep(0)  # every task is queued
        for task in tasks[::2]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        later = await asyncio.wait_for(writer.record(result(99)), 30)
        await writer.aclose()
        return later

    assert asyncio.run(go()) == "run_000099"
    assert len(Store.open(tmp_path / "c.db").runs(limit=100)) == 41


def test_a_second_event_loop_gets_a_child_of_its_own(tmp_path: Path) -> None:
    writer = LoopTraceWriter(Store.open(tmp_path / "two.db"))
    first = asyncio.run(record_all(writer, 0, 30))  # that loop is closed now, its child left running
    old = writer._child
    second = asyncio.run(record_all(writer, 30, 60))
    assert first + second == ids(0, 60)
    assert old is not None and writer._child is not old and old.proc.wait(30) == 0  # it exited of itself
    writer.close()  # no loop runs: the synchronous close
    assert len(Store.open(tmp_path / "two.db").runs(limit=100)) == 60


def test_aclose_while_the_child_is_still_starting_answers_every_waiting_run(tmp_path: Path) -> None:
    # aclose() right after the first records: the child is started during the drain; it must be
    # taken into use (not left running) and every waiting record answered, not hung or dropped.
    writer = LoopTraceWriter(Store.open(tmp_path / "early.db"))

    async def go() -> list[str]:
        waiting = asyncio.gather(*(writer.record(result(i)) for i in range(30)))
        await asyncio.sleep(0)  # queued; the child is not started yet
        await asyncio.wait_for(writer.aclose(timeout=20), 10)
        return list(await asyncio.wait_for(waiting, 5))

    assert asyncio.run(go()) == ids(0, 30)
    assert len(Store.open(tmp_path / "early.db").runs(limit=100)) == 30

"""The trace writer process: every run committed (SQLite and PostgreSQL) exactly as the store writes
it, secrets known only to the parent scrubbed before the write, and no run lost when the child is
killed (it is restarted and sent the unacknowledged batches again, or the parent takes over)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml

from podium.engine import Engine
from podium.pool import parse_pool
from podium.scrub import register_env
from podium.traces.store import Store
from podium.traces.writer_process import ProcessTraceWriter, WriterProcessError
from podium.types import ChatMessage, RunResult, RunStatus, Turn

POOL = {"name": "w", "models": [{"name": "echo", "backend": "scripted", "replies": ["ok"]}]}


def result(i: int, text: str = "a") -> RunResult:
    turn = Turn(
        turn=1, role="worker", model="m", messages=[ChatMessage(role="user", content=f"q{i} {text}")], output=text
    )
    return RunResult(
        run_id=f"run_{i:06d}", query=f"q{i}", answer=text, status=RunStatus.ANSWERED, reason="ok", turns=[turn]
    )


def wait_for(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_every_run_committed_as_the_store_writes_it(store_url: str, tmp_path: Path) -> None:
    store = Store.open(store_url)
    writer = ProcessTraceWriter(store)
    futures = []
    results = [result(i) for i in range(600)]

    def submit(start: int) -> None:
        futures.extend(writer.submit(results[i], source="t", owner="k") for i in range(start, start + 150))

    threads = [threading.Thread(target=submit, args=(k * 150,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.flush(timeout=60)
    assert sorted(f.result() for f in futures) == [f"run_{i:06d}" for i in range(600)]
    assert writer.batches < 600  # batched
    writer.close()
    reference = Store.open(tmp_path / "ref.db")
    reference.record(results[7], source="t", owner="k")
    assert store.run("run_000007") == reference.run("run_000007")
    assert len(store.runs(limit=1000)) == 600
    late = writer.submit(result(5000))  # after close: stored at once, not dropped
    assert late.result(timeout=5) == "run_005000" and store.run("run_005000") is not None


def test_a_secret_only_the_parent_knows_never_reaches_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = ProcessTraceWriter(Store.open(tmp_path / "s.db"))
    assert writer.start()  # the child's environment is taken now, before the secret exists
    secret = "plainlookingvalue-" + os.urandom(6).hex()
    monkeypatch.setenv("PODIUM_TEST_PLAIN_NAME", secret)  # neither its name nor its value looks like a key
    register_env(["PODIUM_TEST_PLAIN_NAME"])  # as a pool's api_key_env
    writer.submit(result(1, f"the key is {secret}")).result(timeout=30)
    writer.close()
    stored = Store.open(tmp_path / "s.db").run("run_000001")
    assert stored is not None and "[REDACTED]" in stored["answer"] and secret not in str(stored)
    for file in tmp_path.iterdir():
        assert secret.encode() not in file.read_bytes(), file


def test_a_killed_writer_process_is_restarted_and_its_runs_sent_again(tmp_path: Path) -> None:
    errors: list[Exception] = []
    writer = ProcessTraceWriter(Store.open(tmp_path / "k.db"), on_error=errors.append)
    assert writer.start()
    first = [writer.submit(result(i)) for i in range(50)]
    writer.flush(timeout=30)
    child = writer._proc
    assert child is not None
    os.kill(child.pid, signal.SIGSTOP)  # the next runs reach the child and are never acknowledged
    second = [writer.submit(result(i)) for i in range(50, 300)]
    wait_for(lambda: writer._pending)
    os.kill(child.pid, signal.SIGKILL)
    writer.flush(timeout=60)
    assert [f.result() for f in first + second] == [f"run_{i:06d}" for i in range(300)]
    assert writer.restarts == 1 and writer._proc is not child and not writer.in_process
    assert any(isinstance(e, WriterProcessError) and "-9" in str(e) for e in errors), errors
    writer.close()
    assert len(Store.open(tmp_path / "k.db").runs(limit=1000)) == 300


def test_a_writer_process_that_keeps_dying_hands_over_to_this_process(tmp_path: Path) -> None:
    errors: list[Exception] = []
    writer = ProcessTraceWriter(Store.open(tmp_path / "f.db"), on_error=errors.append, max_restarts=1)
    assert writer.start()
    child = writer._proc
    assert child is not None
    os.kill(child.pid, signal.SIGSTOP)
    futures = [writer.submit(result(i)) for i in range(100)]
    wait_for(lambda: writer._pending)
    os.kill(child.pid, signal.SIGKILL)
    wait_for(lambda: writer._proc is not child)
    replacement = writer._proc
    assert replacement is not None
    os.kill(replacement.pid, signal.SIGKILL)  # before it has even started: a second death in a row
    assert [f.result(timeout=60) for f in futures] == [f"run_{i:06d}" for i in range(100)]
    assert writer.in_process and len(errors) == 2, errors
    assert "storing traces in this process" in str(errors[-1])
    assert writer.submit(result(100)).result(timeout=30) == "run_000100"  # later runs too
    writer.close()
    assert len(Store.open(tmp_path / "f.db").runs(limit=1000)) == 101


def test_engine_handler_with_the_writer_process_stores_every_run(tmp_path: Path) -> None:
    handler = Store.open(tmp_path / "e.db").handler(source="bench", background="process")
    engine = Engine(parse_pool(yaml.safe_dump(POOL), "w"), "fixed")

    async def go() -> None:
        await asyncio.gather(*(engine.run(f"q{i}", on_event=handler) for i in range(60)))
        await engine.aclose()

    asyncio.run(go())
    handler.close()  # type: ignore[attr-defined]
    assert len(Store.open(tmp_path / "e.db").runs(limit=100)) == 60
    assert handler.writer._proc.poll() is not None  # type: ignore[attr-defined]  # the child has exited


def test_a_run_twice_in_one_batch_keeps_the_last_copy(store_url: str) -> None:
    store = Store.open(store_url)
    first, second, other = result(1, "first"), result(1, "second"), result(2)
    second.turns.append(second.turns[0].model_copy(update={"turn": 2}))
    assert store.record_many([(first, "t", None), (other, "t", None), (second, "t", None)]) == [
        "run_000001",
        "run_000002",
        "run_000001",
    ]
    stored = store.run("run_000001")
    assert stored is not None and stored["answer"] == "second" and len(stored["turns"]) == 2
    assert store.run("run_000002") is not None


def test_runs_cross_to_the_writer_process_unchanged() -> None:
    import pickle

    from podium.traces.writer_child import frame

    engine = Engine(parse_pool(yaml.safe_dump(POOL), "w"), "fixed")

    async def go() -> list[RunResult]:
        try:
            return [await engine.run(f"q{i} \ud800 lone surrogate") for i in range(3)]
        finally:
            await engine.aclose()

    runs = asyncio.run(go())
    runs.append(result(9, "text"))
    back = pickle.loads(frame(("batch", 1, runs))[4:])[2]
    assert back == runs and [type(r) for r in back] == [RunResult] * 4
    assert back[0].turns[0].model_fields_set == runs[0].turns[0].model_fields_set


def test_an_unknown_writer_kind_is_a_one_line_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from podium.errors import ConfigError
    from podium.traces.writer import TraceWriter, open_writer

    store = Store.open(tmp_path / "c.db")
    monkeypatch.setenv("PODIUM_TRACE_WRITER", "fork")
    with pytest.raises(ConfigError, match="PODIUM_TRACE_WRITER='fork' is not valid; use 'process' or 'thread'"):
        open_writer(store)
    monkeypatch.delenv("PODIUM_TRACE_WRITER")
    assert isinstance(open_writer(store), TraceWriter)  # the default
    monkeypatch.setenv("PODIUM_TRACE_WRITER", "process")
    assert isinstance(open_writer(store), ProcessTraceWriter)  # not started until used


def test_a_writer_process_that_cannot_start_stores_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    errors: list[Exception] = []
    writer = ProcessTraceWriter(Store.open(tmp_path / "n.db"), on_error=errors.append)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    futures = [writer.submit(result(i)) for i in range(20)]
    writer.flush(timeout=30)
    assert [f.result() for f in futures] == [f"run_{i:06d}" for i in range(20)]
    assert writer.in_process and len(errors) == 1 and "cannot start the trace writer process" in str(errors[0])
    writer.close()
    assert len(Store.open(tmp_path / "n.db").runs(limit=100)) == 20


def test_a_run_that_cannot_be_pickled_fails_its_future_not_the_caller(tmp_path: Path) -> None:
    writer = ProcessTraceWriter(Store.open(tmp_path / "p.db"))
    bad = result(1).model_copy(update={"workflow": {"lock": threading.Lock()}})
    future = writer.submit(bad)  # does not raise in the engine's event handler
    assert future.exception(timeout=30) is not None
    assert writer.submit(result(2)).result(timeout=30) == "run_000002"
    writer.close()


def test_a_busy_event_loop_does_not_starve_the_sender(tmp_path: Path) -> None:
    # An event loop whose work is always ready drops the GIL at every select(0) and takes it back
    # before a woken thread runs (CPython's convoy effect): without the hand-over the sender waited
    # up to 1.5 s and most batches were acknowledged only after the engine had finished.
    handler = Store.open(tmp_path / "busy.db").handler(source="bench", background="process")
    writer = handler.writer  # type: ignore[attr-defined]
    assert writer.start()
    engine = Engine(parse_pool(yaml.safe_dump(POOL), "w"), "fixed")
    runs = 1600

    async def go() -> int:
        left = [runs]

        async def worker() -> None:
            while left[0] > 0:
                left[0] -= 1
                await engine.run("q", on_event=handler)

        await asyncio.gather(*(worker() for _ in range(10)))
        acknowledged = writer.batches  # while the loop was busy
        await engine.aclose()
        return acknowledged

    acknowledged = asyncio.run(go())
    handler.close()  # type: ignore[attr-defined]
    assert len(Store.open(tmp_path / "busy.db").runs(limit=runs + 1)) == runs
    assert acknowledged >= runs // 64 // 5, f"{acknowledged} batches acknowledged during the run"

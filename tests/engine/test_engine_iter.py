"""Runs as async iterators (``Engine.iter``): event order, the result, stopping midway, and the
sync ``ask`` refusing to run inside an event loop."""

from __future__ import annotations

import asyncio

import pytest

from conftest import POOLS
from podium import Engine, RunStatus, ask, load_pool
from podium.backends import BackendSet
from podium.backends.scripted import ScriptedBackend
from podium.engine import EngineRun
from podium.errors import UsageError
from podium.events import RunFinished, TurnDelta, TurnFinished, TurnStarted
from podium.traces.store import Store

SCRIPTED = POOLS / "scripted.yaml"


def engine_with(**functions: object) -> Engine:
    pool = load_pool(SCRIPTED)
    overrides = {name: ScriptedBackend(pool.get(name), fn) for name, fn in functions.items()}  # type: ignore[arg-type]
    return Engine(pool, "rules", backends=BackendSet(overrides=overrides))


async def test_iter_yields_every_event_in_order_then_the_result() -> None:
    engine = engine_with(solver=lambda r: "three hundred ninety-one")
    kinds: list[str] = []
    streamed: dict[int, str] = {}
    async with engine.iter("What is 17 * 23?", stream=True) as run:
        assert isinstance(run, EngineRun) and run.result is None
        async for event in run:
            kinds.append(type(event).__name__)
            if isinstance(event, TurnDelta):
                streamed[event.turn] = streamed.get(event.turn, "") + event.text
    assert run.result is not None and run.result.status == RunStatus.ACCEPTED
    assert run.result.answer == "three hundred ninety-one"
    assert streamed == {t.turn: t.output for t in run.result.turns}  # every turn's text, once, in its pieces
    # per turn: started, its deltas, finished; then the run
    assert kinds[0] == "TurnStarted" and kinds[-1] == "RunFinished" and kinds.count("RunFinished") == 1
    assert kinds.count("TurnStarted") == kinds.count("TurnFinished") == 3
    turns = [k for k in kinds if k in ("TurnStarted", "TurnFinished")]
    assert turns == ["TurnStarted", "TurnFinished"] * 3  # each turn finishes before the next starts
    assert kinds.index("TurnDelta") > kinds.index("TurnStarted")
    # the same run through run(): the same answer and turns
    again = await engine.run("What is 17 * 23?")
    assert [t.model for t in again.turns] == [t.model for t in run.result.turns]


async def test_iter_events_match_the_handlers_events() -> None:
    seen: list[object] = []
    engine = engine_with()
    async with engine.iter("q", on_event=seen.append) as run:
        iterated = [event async for event in run]
    assert iterated == seen and isinstance(iterated[-1], RunFinished) and iterated[-1].result is run.result


async def test_leaving_iter_midway_stops_the_run_and_stores_it_as_interrupted(tmp_path) -> None:
    store = Store.open(tmp_path / "traces.db")
    started = asyncio.Event()

    async def slow(request: object) -> str:
        started.set()
        await asyncio.sleep(30)
        return "never"

    engine = engine_with(solver=slow)
    async with engine.iter("What is 17 * 23?", on_event=store.handler(source="test")) as run:
        async for event in run:
            if isinstance(event, TurnStarted) and event.model == "solver":
                await asyncio.wait_for(started.wait(), 5)
                break  # the consumer goes away while the worker's call is in flight
    assert run.result is not None
    assert run.result.status == RunStatus.FAILED and run.result.reason == "interrupted"
    stored = store.run(run.result.run_id)
    assert stored is not None and stored["status"] == "interrupted"  # how the store files a stopped run
    assert [t["model"] for t in stored["turns"]] == ["planner"]  # the finished turn is kept
    store.close()


async def test_cancelling_the_consumer_task_stops_the_run() -> None:
    results: list[RunFinished] = []
    gate = asyncio.Event()

    async def slow(request: object) -> str:
        gate.set()
        await asyncio.sleep(30)
        return "never"

    engine = engine_with(solver=slow)

    async def consume() -> None:
        async with engine.iter(
            "q", on_event=lambda e: results.append(e) if isinstance(e, RunFinished) else None
        ) as run:
            async for _event in run:
                pass

    task = asyncio.create_task(consume())
    await asyncio.wait_for(gate.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(results) == 1 and results[0].result.reason == "interrupted"
    assert results[0].result.status == RunStatus.FAILED


async def test_iter_raises_usage_errors_before_starting() -> None:
    engine = engine_with()
    with pytest.raises(UsageError, match="empty"):
        engine.iter("   ")


async def test_a_run_error_is_raised_by_the_iteration() -> None:
    def broken(request: object) -> str:
        raise UsageError("the GGUF file is missing")  # a config problem found mid-run

    engine = engine_with(solver=broken)
    events: list[object] = []
    with pytest.raises(UsageError, match="GGUF"):
        async with engine.iter("q") as run:
            async for event in run:
                events.append(event)
    assert isinstance(events[-1], RunFinished) and "config error" in events[-1].result.reason
    assert any(isinstance(e, TurnFinished) for e in events)


async def test_sync_ask_inside_a_running_loop_says_what_to_use() -> None:
    with pytest.raises(UsageError, match=r"await engine\.run|engine\.iter"):
        ask("What is 17 * 23?", pool=load_pool(SCRIPTED))


def test_sync_ask_outside_a_loop_runs() -> None:
    result = ask("What is 17 * 23?", pool=load_pool(SCRIPTED))
    assert result.status == RunStatus.ACCEPTED and result.answer == "391"

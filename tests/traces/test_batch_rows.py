"""The store's batch rows: a run read back from pydantic-core's JSON, with one search of that JSON
deciding whether its strings need scrubbing, is stored exactly as the slow path (every string
scrubbed, the model dumped field by field) stores it; runs JSON cannot give back exactly take the
slow path; writers without a future per run (the engine's handler) still flush and report errors."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from podium.traces._batch import decode, encode, plain
from podium.traces.store import Store
from podium.traces.writer import TraceWriter
from podium.traces.writer_process import ProcessTraceWriter
from podium.types import ChatMessage, RunResult, RunStatus, Turn

SECRET = "parent-only-secret-0123456789"


def run(i: int, **update: Any) -> RunResult:
    turns = [
        Turn(
            turn=n,
            role=role,
            model=f"m{n % 2}",
            messages=[ChatMessage(role="system", content="be brief"), ChatMessage(role="user", content=f'q{i} "x"')],
            output=f"out {i}",
            prompt_tokens=10 * n,
            completion_tokens=n,
            cost_usd=n * 1e-6,
            latency_s=0.25,
            verdict="ACCEPT" if role == "verifier" else None,
            error="HTTP 500" if n == 2 and i % 3 == 0 else None,
            attempts=["m0: timeout"] if n == 2 else [],
        )
        for n, role in enumerate(("thinker", "worker", "verifier"), start=1)
    ]
    base = RunResult(
        run_id=f"run_{i:06d}", query=f"q{i}", answer=f"out {i}", status=RunStatus.ACCEPTED, reason="ok", turns=turns
    )
    return base.model_copy(update=update)


def tricky() -> list[RunResult]:
    step = (
        run(90)
        .turns[0]
        .model_copy(
            update={
                "inputs": ["a", "é"],
                "step": "s1",
                "depth": 2,
                "started_at": 1.5,
                "ended_at": 2.5,
                "deployment": "d",
            }
        )
    )
    return [
        run(1),
        run(2, query=f"my key is {SECRET} ok", answer="sk-abcdefghijklmnopqrstuvwx12345 there"),
        run(3, answer='é ü \u2028 \x7f \x01 "quoted" \\ back', reason="Authorization: Bearer abcdefghijklmnop"),
        run(4, policy={"z": 1, "a": [1, 2.5, "api_key=zzzzzzzzzz"]}, workflow={"steps": [{"id": "a"}], "b": None}),
        run(5, status=RunStatus.FAILED, reason="interrupted: cancelled", turns=[step]),
        run(6, answer=None, turns=[], orchestration_prompt_tokens=3, orchestration_cost_usd=1e-300),
        run(7, query="k" * 70 + "0123456789abcdef" * 4),
        run(10, policy={"z": 1, "a": [2.5, None]}, workflow={"steps": [{"id": "a", "p": "é"}], "b": None}),
        run(8, query="lone \ud800 surrogate"),  # JSON cannot carry it: the slow path
        run(9, latency_s=float("inf"), policy={"cap": float("inf")}),  # JSON would write null: the slow path
    ]


def stored(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(path) as conn:
        return {t: sorted(conn.execute(f"SELECT * FROM {t}")) for t in ("runs", "turns", "run_models")}


@pytest.mark.parametrize("mode", ["full", "hash"])
def test_the_json_path_stores_what_scrubbing_every_string_stores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setenv("PARENT_API_KEY", SECRET)
    runs = tricky()
    fast, slow = Store(tmp_path / "fast.db", text_mode=mode), Store(tmp_path / "slow.db", text_mode=mode)  # type: ignore[arg-type]
    assert fast.record_many([(plain(r), "s", "o") for r in runs]) == [r.run_id for r in runs]
    slow.record_many([((r.model_dump(), None), "s", "o") for r in runs])
    got, want = stored(tmp_path / "fast.db"), stored(tmp_path / "slow.db")
    assert got == want and len(got["runs"]) == 10 and len(got["turns"]) == 25
    if mode == "full":
        data = b"".join(p.read_bytes() for p in tmp_path.glob("fast.db*"))
        assert SECRET.encode() not in data and b"abcdefghijklmnop" not in data and b"zzzzzzzzzz" not in data
        assert 'é ü \u2028 \x7f \x01 "quoted" \\ back'.encode() in data


def test_runs_json_cannot_give_back_exactly_travel_pickled() -> None:
    runs = tricky()
    kinds = [encode(r)[:1] for r in runs]
    assert kinds == [b"J"] * 8 + [b"P", b"P"]
    for r in runs:
        fields, text = decode(encode(r))
        assert (text is None) == (encode(r)[:1] == b"P")
        assert fields == (plain(r)[0] if text is not None else r.model_dump())
    assert plain(runs[9])[0]["latency_s"] == float("inf")  # not null


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_runs_queued_without_a_future_are_flushed_and_their_errors_reported(tmp_path: Path, kind: str) -> None:
    errors: list[Exception] = []
    store = Store.open(tmp_path / "q.db")
    writer: Any = (TraceWriter if kind == "thread" else ProcessTraceWriter)(store, on_error=errors.append, linger=0.02)
    bad = run(1000).model_copy(update={"workflow": {"lock": threading.Lock()}})
    for i in range(300):
        writer.enqueue(bad if i == 150 else run(i), source="e")
    writer.flush(timeout=60)
    assert len(store.runs(limit=1000)) == 299 and store.run("run_000149") is not None
    assert len(errors) == 1 and writer.batches < 100  # lingering: batches, not one commit per run
    writer.enqueue(run(400))
    writer.close()
    assert store.run("run_000400") is not None


def test_flush_waits_for_queued_runs_only(tmp_path: Path) -> None:
    writer = ProcessTraceWriter(Store.open(tmp_path / "f.db"))
    writer.flush(timeout=5)  # nothing queued: returns at once
    for i in range(50):
        writer.enqueue(run(i))
    writer.flush(timeout=60)
    assert len(Store.open(tmp_path / "f.db").runs(limit=100)) == 50
    writer.close()

"""The trace store, on SQLite and on PostgreSQL (``store_url``): schema and migrations, round trips,
concurrency, failed/interrupted runs."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import podium.traces.store as store_mod
from podium.engine import Engine
from podium.errors import UsageError
from podium.pool import Policy, parse_pool
from podium.traces.store import Store, default_path, parse_time, recorder
from podium.types import Budget, Role, RunResult, RunStatus, Turn, Verdict
from store_seed import questions, seed

REPO = Path(__file__).resolve().parents[2]


def make_result(
    query: str = "q",
    *,
    started_at: float | None = None,
    status: RunStatus = RunStatus.ACCEPTED,
    turns: list[Turn] | None = None,
) -> RunResult:
    result = RunResult(query=query, status=status, reason="test", pool="p", coordinator="rules", answer="a")
    if started_at is not None:
        result.started_at = started_at
    result.turns = (
        turns
        if turns is not None
        else [
            Turn(
                turn=1,
                role=Role.WORKER,
                model="m1",
                region="eu",
                output="a",
                prompt_tokens=10,
                completion_tokens=2,
                cost_usd=0.001,
                latency_s=0.5,
            ),
            Turn(
                turn=2,
                role=Role.VERIFIER,
                model="m2",
                region="us",
                output="ACCEPT",
                verdict=Verdict.ACCEPT,
                latency_s=0.25,
            ),
        ]
    )
    return result


def test_default_path_follows_podium_home(podium_home: Path) -> None:
    assert default_path() == podium_home / "podium.db"
    store = Store.open()
    assert store.path.exists() and store.path.parent == podium_home


def test_sqlite_wal_mode_and_tables(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "t.db")
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"runs", "turns", "schema_migrations"} <= tables


def test_named_migrations(store_url: str) -> None:
    store = Store.open(store_url)
    shipped = [name for name, _ in store_mod.MIGRATIONS]
    assert store.migrations() == shipped and shipped[0] == "0001_runs_and_turns"
    Store.open(store_url)  # reopening applies nothing twice
    assert store.migrations() == shipped


def test_appended_migration_applies_once_and_keeps_data(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store.open(store_url)
    store.record(make_result("kept"))
    extra = ("9999_test_column", ["ALTER TABLE runs ADD COLUMN note TEXT"])
    monkeypatch.setattr(store_mod, "MIGRATIONS", [*store_mod.MIGRATIONS, extra])
    upgraded = Store.open(store_url)
    assert upgraded.migrations() == [*(name for name, _ in store_mod.MIGRATIONS[:-1]), "9999_test_column"]
    Store.open(store_url)  # ALTER TABLE would fail if it ran twice
    runs = upgraded.runs()
    assert [r["query"] for r in runs] == ["kept"] and runs[0]["note"] is None


def test_grades_migration_upgrades_an_old_store_and_keeps_runs(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    old_migrations = [
        m for m in store_mod.MIGRATIONS if m[0] != "0002_run_grades"
    ]  # a store made before grades existed
    monkeypatch.setattr(store_mod, "MIGRATIONS", old_migrations)
    old = Store.open(store_url)
    old.record(make_result("graded later"))
    monkeypatch.undo()
    store = Store.open(store_url)
    assert "0002_run_grades" in store.migrations()
    run_id = store.runs()[0]["id"]
    assert store.run(run_id)["grade_score"] is None
    assert store.grade(run_id, score=1.0, source="check:number", task_id="gsm8k/1", detail="ok")
    run = store.run(run_id)
    assert (run["query"], run["grade_score"], run["grade_source"], run["task_id"]) == (
        "graded later",
        1.0,
        "check:number",
        "gsm8k/1",
    )
    assert not store.grade("run_missing", score=0.0, source="check:number")


def test_record_round_trip(store_url: str) -> None:
    store = Store.open(store_url)
    result = make_result("What is 2+2?")
    assert store.record(result, source="test", owner="key1") == result.run_id
    run = store.run(result.run_id)
    assert run is not None
    assert (run["query"], run["status"], run["answer"], run["source"], run["owner"]) == (
        "What is 2+2?",
        "accepted",
        "a",
        "test",
        "key1",
    )
    assert run["total_tokens"] == 12 and run["cost_usd"] == pytest.approx(0.001) and run["n_turns"] == 2
    assert [(t["turn"], t["role"], t["model"], t["region"], t["verdict"]) for t in run["turns"]] == [
        (1, "worker", "m1", "eu", None),
        (2, "verifier", "m2", "us", "ACCEPT"),
    ]
    assert run["models"] == ["m1", "m2"]
    assert store.run(result.run_id, owner="someone-else") is None
    store.record(result)  # re-recording replaces, never duplicates
    assert store.count() == 1 and len(store.run(result.run_id)["turns"]) == 2


def test_filters_and_prefix_resolution(store_url: str) -> None:
    store = Store.open(store_url)
    old = make_result("old one", started_at=parse_time("2024-01-02"))
    new = make_result(
        "new one", status=RunStatus.FAILED, turns=[Turn(turn=1, role=Role.WORKER, model="m9", error="boom")]
    )
    store.record(old)
    store.record(new)
    assert [r["id"] for r in store.runs()] == [new.run_id, old.run_id]
    assert [r["id"] for r in store.runs(status="failed")] == [new.run_id]
    assert [r["id"] for r in store.runs(model="m1")] == [old.run_id]
    assert [r["id"] for r in store.runs(since="2025-01-01")] == [new.run_id]
    assert [r["id"] for r in store.runs(until="2025-01-01")] == [old.run_id]
    assert [r["id"] for r in store.runs(query="new")] == [new.run_id]
    assert store.resolve(old.run_id[:-3]) == old.run_id
    with pytest.raises(UsageError, match="ambiguous"):
        store.resolve("run_")
    with pytest.raises(UsageError, match="no stored run"):
        store.resolve("nope")
    with pytest.raises(UsageError, match="not a date"):
        store.runs(since="yesterday-ish")


def test_concurrent_writers_threads_and_processes(store_url: str) -> None:
    path = store_url
    Store.open(path)
    script = (
        "import sys; from podium.traces.store import Store; from podium.types import RunResult, RunStatus\n"
        "s = Store.open(sys.argv[1])\n"
        "for i in range(25): s.record(RunResult(query=f'proc {i}', status=RunStatus.ACCEPTED))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path)]) for _ in range(3)]
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            s = Store.open(path)
            for i in range(25):
                s.record(make_result(f"thread {n} run {i}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    assert errors == []
    store = Store.open(path)
    assert store.count() == 6 * 25 + 3 * 25
    assert len(store.turn_rows()) == 6 * 25 * 2


SEED_POOL = """
name: fails
models:
  - name: slow
    backend: scripted
    replies: ["!sleep 30\\nnever"]
  - name: broken
    backend: scripted
    replies: ["!error upstream refused the request"]
    max_retries: 0
defaults: {worker: broken, thinker: broken, verifier: broken}
"""


async def test_failed_run_is_stored(store_url: str) -> None:
    store = Store.open(store_url)
    pool = parse_pool(SEED_POOL, "test").restrict(Policy(exclude_models=["slow"]))
    engine = Engine(pool, "rules", on_event=store.handler())
    result = await engine.run("anything", budget=Budget(max_turns=4))
    await engine.aclose()
    assert result.status == RunStatus.FAILED
    run = store.run(result.run_id)
    assert run["status"] == "failed" and run["turns"] and all("upstream refused" in t["error"] for t in run["turns"])


async def test_interrupted_run_is_stored(store_url: str) -> None:
    store = Store.open(store_url)
    pool = parse_pool(SEED_POOL.replace("worker: broken, thinker: broken", "worker: slow, thinker: slow"), "test")
    engine = Engine(pool, "rules")
    task = asyncio.create_task(engine.run("a question that will be cut", on_event=store.handler()))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await engine.aclose()
    runs = store.runs()
    assert [(r["status"], r["reason"], r["query"]) for r in runs] == [
        ("interrupted", "interrupted", "a question that will be cut")
    ]


def test_recorder_off_and_unwritable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODIUM_TRACES", "off")
    assert recorder("cli") is None
    monkeypatch.setenv("PODIUM_TRACES", "full")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    warnings: list[str] = []
    assert recorder("cli", path=blocker / "sub" / "podium.db", warn=warnings.append) is None
    assert len(warnings) == 1 and "cannot open the trace store" in warnings[0]
    monkeypatch.setenv("PODIUM_TRACES", "sometimes")
    with pytest.raises(UsageError, match="PODIUM_TRACES"):
        recorder("cli")


def test_seeded_engine_runs_are_stored(store_url: str) -> None:
    store = Store.open(store_url)
    results = seed(store, questions(2))
    assert store.count() == 4
    by_id = {r.run_id: r for r in results}
    for run in store.runs():
        original = by_id[run["id"]]
        assert run["status"] == original.status.value and run["n_turns"] == len(original.turns) == 3
        assert run["cost_usd"] == pytest.approx(original.cost_usd)
    assert {r["status"] for r in store.runs()} == {"accepted", "max_turns"}


def test_traces_url_chooses_the_store(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODIUM_TRACES_URL", store_url if "://" in store_url else f"sqlite://{store_url}")
    store = Store.open()
    store.record(make_result("via the url"))
    assert type(store).__name__ == ("PgStore" if "://" in store_url else "Store")
    assert [r["query"] for r in Store.open(store_url).runs()] == ["via the url"]
    assert "@" not in store.location or ":***@" in store.location or "podium@" in store.location


def test_postgres_unreachable_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from local_servers import free_port

    url = f"postgresql://podium:s3cret@127.0.0.1:{free_port()}/none"
    warnings: list[str] = []
    assert recorder("cli", path=url, warn=warnings.append) is None
    assert len(warnings) == 1 and "cannot open the trace store" in warnings[0] and "PODIUM_TRACES_URL" in warnings[0]
    assert "s3cret" not in warnings[0]
    monkeypatch.setenv("PODIUM_TRACES_URL", "mysql://x@127.0.0.1/db")
    with pytest.raises(UsageError, match="PODIUM_TRACES_URL"):
        Store.open()


def test_postgres_restart_loses_one_write_at_most(postgres_server) -> None:
    url = postgres_server.fresh_schema()
    store = Store.open(url)
    store.record(make_result("before"))
    postgres_server.restart()  # the store's connection is now dead
    errors: list[Exception] = []
    handler = store.handler(on_error=errors.append)
    from podium.engine import RunFinished

    handler(RunFinished(make_result("right after")))
    store.record(make_result("later"))
    stored = {r["query"] for r in Store.open(url).runs()}
    assert {"before", "later"} <= stored and len(errors) + len(stored) == 3

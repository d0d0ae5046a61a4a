"""Migration 0006 drops the unused ``runs_query_hash`` index from a store made before it, keeps every
run, and listing, one run and the stats still answer as before (no query needed the index)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from podium.traces import store as store_mod
from podium.traces.reports import model_stats
from podium.traces.store import Store
from podium.types import Role, RunResult, RunStatus, Turn


def result(i: int) -> RunResult:
    turns = [Turn(turn=1, role=Role.WORKER, model=f"m{i % 3}", output=f"a{i}", latency_s=0.1 * i, cost_usd=1e-5)]
    return RunResult(run_id=f"run_{i:04d}", query=f"q{i % 7}", status=RunStatus.ANSWERED, turns=turns, started_at=i)


def indexes(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    finally:
        conn.close()


def test_an_old_store_loses_the_index_and_keeps_its_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "old.db"
    old_migrations = [m for m in store_mod.MIGRATIONS if m[0] != "0006_drop_runs_query_hash"]
    assert len(old_migrations) == len(store_mod.MIGRATIONS) - 1
    with monkeypatch.context() as patch:  # a store as podium made it before 0006
        patch.setattr(store_mod, "MIGRATIONS", old_migrations)
        old = Store.open(path)
        old.record_many([(result(i), "cli", None) for i in range(40)])
        before = (old.runs(limit=None), old.run("run_0007"), model_stats(old))
        old.close()
    assert "runs_query_hash" in indexes(path)
    store = Store.open(path)
    assert "0006_drop_runs_query_hash" in store.migrations()
    assert "runs_query_hash" not in indexes(path)
    assert {"runs_started", "runs_status", "run_models_stats", "turns_ok_latency"} <= indexes(path)
    assert (store.runs(limit=None), store.run("run_0007"), model_stats(store)) == before
    store.record(result(40))
    assert len(store.runs(limit=None)) == 41
    Store.open(path)  # reopening applies nothing twice


def test_a_new_store_never_has_the_index(tmp_path: Path) -> None:
    Store.open(tmp_path / "new.db")
    assert "runs_query_hash" not in indexes(tmp_path / "new.db")

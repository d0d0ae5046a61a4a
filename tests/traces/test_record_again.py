"""Recording runs again replaces their turns and per-model rows, and only theirs: the batch looks up
which of its runs are stored already (in chunks of bound parameters) and deletes only those rows."""

from __future__ import annotations

from pathlib import Path

from podium.traces import _batch
from podium.traces.store import Store
from podium.types import Role, RunResult, RunStatus, Turn


def run(i: int, n_turns: int) -> RunResult:
    turns = [Turn(turn=t, role=Role.WORKER, model=f"m{t}", output=f"o{i}.{t}") for t in range(1, n_turns + 1)]
    return RunResult(run_id=f"run_{i:05d}", query=f"q{i}", status=RunStatus.ANSWERED, turns=turns)


def counts(store: Store) -> tuple[int, int, int]:
    conn = store._conn()
    return tuple(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("runs", "turns", "run_models"))  # type: ignore[return-value]


def test_a_batch_of_new_and_stored_runs_spanning_lookup_chunks(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "t.db")
    n = _batch._CHUNK + 100  # more runs than one lookup binds
    store.record_many([(run(i, 3), "a", None) for i in range(0, n, 2)])  # the even ones, 3 turns each
    assert counts(store) == (n // 2, 3 * n // 2, 3 * n // 2)
    store.record_many([(run(i, 1), "b", None) for i in range(n)])  # all again (evens: stored), 1 turn each
    assert counts(store) == (n, n, n)
    one = store.run("run_00002")
    assert one is not None and [t["response"] for t in one["turns"]] == ["o2.1"] and one["source"] == "b"


def test_other_runs_keep_their_turns(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "t.db")
    store.record_many([(run(1, 2), None, None), (run(2, 2), None, None)])
    store.record(run(2, 3))
    assert counts(store) == (2, 5, 5)
    first = store.run("run_00001")
    assert first is not None and len(first["turns"]) == 2

"""`traces stats` computed in SQL equals the former all-rows-in-Python computation, filters included;
`ls --model` pages stay in order."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

from podium.traces.reports import model_stats
from podium.traces.store import Store

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_traces_scale.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_traces_scale", BENCH)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_sql_stats_equal_the_python_reference(store_url: str) -> None:
    bench = _bench()
    store = Store.open(store_url)
    rng = random.Random(3)
    store.record_many([(bench.synthetic_run(i, rng), "t", None) for i in range(400)])
    assert model_stats(store) == bench.python_model_stats(store)
    since, until = 1.7e9 + 100, 1.7e9 + 250
    sql = model_stats(store, since=since, until=until)
    assert sum(m["calls"] for m in sql) == 3 * 150
    everything = {m["model"]: m for m in model_stats(store)}
    assert any(m["latency_p50_s"] != everything[m["model"]]["latency_p50_s"] for m in sql)  # the filter applies


def test_ls_by_model_pages_newest_first(tmp_path: Path) -> None:
    bench = _bench()
    store = Store.open(tmp_path / "podium.db")
    rng = random.Random(4)
    store.record_many([(bench.synthetic_run(i, rng), "t", None) for i in range(200)])
    pages = [store.runs(model="model-2", limit=7, offset=o) for o in (0, 7, 14)]
    ids = [r["id"] for page in pages for r in page]
    every = [r["id"] for r in store.runs(model="model-2", limit=None)]
    assert ids == every[:21] and all("model-2" in r["models"] for page in pages for r in page)
    assert every == sorted(every, reverse=True)  # started_at grows with the id here


def test_run_models_migration_sums_an_old_store(store_url: str) -> None:
    """A store made before 0004_run_models gets its per-run sums from the migration; stats then
    equal the reference, and runs recorded after it are summed by the writer."""
    bench = _bench()
    rng = random.Random(5)
    old = Store.open(store_url)
    old.record_many([(bench.synthetic_run(i, rng), "t", None) for i in range(150)])
    with old._write() as conn:  # back to the schema before 0004, with the runs kept
        for sql in (
            "DROP TABLE run_models",
            "DROP INDEX turns_ok_latency",
            "CREATE INDEX turns_model ON turns(model)",
            "DELETE FROM schema_migrations WHERE name = '0004_run_models'",
        ):
            conn.execute(sql)
    assert "0004_run_models" not in old.migrations()
    store = Store.open(store_url)
    assert "0004_run_models" in store.migrations()
    assert model_stats(store) == bench.python_model_stats(store)
    store.record_many([(bench.synthetic_run(i, rng), "t", None) for i in range(150, 220)])
    assert model_stats(store) == bench.python_model_stats(store)
    assert sum(m["calls"] for m in model_stats(store)) == 3 * 220
    assert [r["id"] for r in store.runs(model="model-1", limit=None)] == [
        r["id"] for r in store.runs(limit=None) if "model-1" in r["models"]
    ]


def test_rerecorded_and_purged_runs_leave_no_sums(store_url: str) -> None:
    bench = _bench()
    store = Store.open(store_url)
    rng = random.Random(6)
    runs = [bench.synthetic_run(i, rng) for i in range(60)]
    store.record_many([(run, "t", None) for run in runs])
    replaced = runs[0].model_copy(update={"turns": runs[0].turns[:1]})  # recorded again with one turn
    store.record(replaced)
    assert model_stats(store) == bench.python_model_stats(store)
    assert sum(m["calls"] for m in model_stats(store)) == 3 * 60 - 2
    assert store.purge(1.7e9 + 30) == 30
    assert model_stats(store) == bench.python_model_stats(store)
    assert sum(m["runs"] for m in model_stats(store)) == sum(len(set(r["models"])) for r in store.runs(limit=None))
    store.purge(1.7e9 + 1000)
    assert model_stats(store) == []

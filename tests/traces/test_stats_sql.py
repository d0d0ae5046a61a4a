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


def test_sql_stats_equal_the_python_reference(tmp_path: Path) -> None:
    bench = _bench()
    store = Store.open(tmp_path / "podium.db")
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

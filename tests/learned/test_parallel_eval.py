"""``podium eval replay`` in parallel processes gives the same numbers as one dataset after the other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_replay_data import make_dataset

from podium.learned.parallel_eval import blas_threads, evaluate_one, evaluate_paths
from podium.learned.replay import load_replay
from podium.learned.simulated_verifier import Verifier
from podium.learned.train import TrainConfig

TINY = TrainConfig(k=8, generations=4, encoder={"name": "hashed", "dim": 256}, knn_ks=(5,))
TIMING = ("latency_ms", "seconds", "p50_ms_fresh", "p50_ms_hit", "p50_ms_miss", "train_seconds", "created")


def without_timings(value: Any) -> Any:
    """``value`` with every wall-clock measurement left out (they differ between runs)."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list | tuple):
        return [without_timings(v) for v in value]
    return value


def test_parallel_results_equal_sequential_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODIUM_HOME", str(tmp_path / "home"))
    paths = [str(make_dataset(tmp_path / f"d{s}", per_task=25, seed=s)) for s in (1, 2)]
    verifier = Verifier(0.2, 0.1, 0)
    one_by_one = [evaluate_one(load_replay(p), TINY, 2, verifier, 3, quiet=True) for p in paths]
    parallel = evaluate_paths(paths, TINY, 2, verifier, 3, quiet=True, jobs=2)
    assert [r["dataset"]["name"] for r in parallel] == ["d1", "d2"]  # the order of the arguments
    assert without_timings(parallel) == without_timings(one_by_one)
    assert one_by_one[0]["methods"] != one_by_one[1]["methods"]  # two different datasets, not one twice


def test_blas_threads_limits_and_restores() -> None:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    with blas_threads(1):
        inside = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
        np.ones((64, 64)) @ np.ones((64, 64))
    after = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    assert inside and all(n == 1 for n in inside) and after == before

"""The routing-decision cache: similarity threshold, context, TTL, size bound; and its replay measurement."""

from __future__ import annotations

import numpy as np
import pytest

from podium.learned.cache_eval import paraphrase, query_stream
from podium.learned.decision_cache import DecisionCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_similar_vectors_hit_and_dissimilar_ones_miss() -> None:
    cache = DecisionCache(threshold=0.95, max_size=8, ttl_s=60)
    a = np.array([1.0, 0.0, 0.0])
    cache.put(a, "A")
    assert cache.get(np.array([1.0, 0.1, 0.0])) == "A"  # cosine 0.995
    assert cache.get(np.array([1.0, 1.0, 0.0])) is None  # cosine 0.71
    assert cache.get(a, context="other") is None  # another run context (failed models, cost weight)
    assert cache.hits == 1 and cache.misses == 2 and cache.hit_rate == pytest.approx(1 / 3)


def test_entries_expire_after_the_ttl() -> None:
    clock = Clock()
    cache = DecisionCache(threshold=0.9, max_size=4, ttl_s=10, clock=clock)
    cache.put(np.array([0.0, 1.0]), "B")
    clock.now = 9.9
    assert cache.get(np.array([0.0, 1.0])) == "B"
    clock.now = 10.0
    assert cache.get(np.array([0.0, 1.0])) is None


def test_size_bound_evicts_the_least_recently_used() -> None:
    clock = Clock()
    cache = DecisionCache(threshold=0.99, max_size=2, ttl_s=100, clock=clock)
    x, y, z = np.eye(3)
    cache.put(x, "x")
    clock.now = 1
    cache.put(y, "y")
    clock.now = 2
    assert cache.get(x) == "x"  # x is now more recent than y
    clock.now = 3
    cache.put(z, "z")
    assert len(cache) == 2
    assert cache.get(y) is None and cache.get(x) == "x" and cache.get(z) == "z"


def test_bad_settings_are_rejected() -> None:
    for kwargs in ({"threshold": 0.0}, {"max_size": 0}, {"ttl_s": 0}):
        with pytest.raises(ValueError):
            DecisionCache(**kwargs)


def test_query_stream_has_repeats_and_paraphrases() -> None:
    texts = [f"What is the capital of country number {i} in the list?" for i in range(100)]
    stream = query_stream(texts, np.arange(100), n=40, share=0.25, seed=0)
    kinds = [k for _, _, k in stream]
    assert kinds.count("original") == 40 and kinds.count("repeat") == 10 and kinds.count("paraphrase") == 10
    for row, text, kind in stream:
        if kind == "paraphrase":
            assert text != texts[row]
    assert paraphrase("a b c d e f g h", np.random.default_rng(1)) != "a b c d e f g h"


def test_coordinator_reuses_cached_logits_and_replay_measure(tmp_path, monkeypatch) -> None:
    from test_replay_data import make_dataset

    from podium.coordinators.learned import LearnedCoordinator
    from podium.learned.cache_eval import measure_cache
    from podium.learned.encoders import get_encoder
    from podium.learned.replay import load_replay
    from podium.learned.train import TrainConfig, prepare, train_head

    monkeypatch.setenv("PODIUM_HOME", str(tmp_path / "home"))
    config = TrainConfig(k=16, generations=5, encoder={"name": "hashed", "dim": 512}, knn_ks=(5, 20))
    ds = load_replay(make_dataset(tmp_path / "s", per_task=30))
    head = train_head(prepare(ds, config), config, progress=None)
    cache = DecisionCache(threshold=0.98)
    coordinator = LearnedCoordinator(head, decision_cache=cache)
    emb = coordinator.encode(ds.texts[0])
    failed = np.zeros((1, 3))
    first = coordinator.logits(emb, failed)
    assert np.array_equal(coordinator.logits(emb, failed), first) and cache.hits == 1
    coordinator.logits(emb, np.ones((1, 3)))  # another context: a miss
    assert cache.misses == 2
    rows = ds.indices("test")
    out = measure_cache(head, get_encoder(head.encoder), ds, rows, n=len(rows), thresholds=(0.98,))[0]
    assert out["hit_rate_by_kind"]["repeat"] == 1.0 and out["queries"] > len(rows)
    assert (out["p50_ms_fresh"] > 0 and out["score_change_ci"][0] <= 0 <= out["score_change_ci"][1]) or out[
        "hits_from_another_item"
    ] > 0


def test_replay_measure_misses_decide_as_the_fresh_pass(tmp_path, monkeypatch) -> None:
    """A miss reuses the fresh pass's logits for the same query: with a cache that hits only on the
    same text, every decision and score equals the fresh one; a loose cache hits across items."""
    from test_replay_data import make_dataset

    from podium.learned.cache_eval import measure_cache
    from podium.learned.encoders import get_encoder
    from podium.learned.replay import load_replay
    from podium.learned.train import TrainConfig, prepare, train_head

    monkeypatch.setenv("PODIUM_HOME", str(tmp_path / "home"))
    config = TrainConfig(k=16, generations=3, encoder={"name": "hashed", "dim": 512}, knn_ks=(5, 20))
    ds = load_replay(make_dataset(tmp_path / "s", per_task=30))
    head = train_head(prepare(ds, config), config, progress=None)
    rows = ds.indices("test")
    exact, loose = measure_cache(head, get_encoder(head.encoder), ds, rows, n=len(rows), thresholds=(1.0, 1e-6))
    assert exact["hits_from_another_item"] == 0 and exact["hit_rate_by_kind"]["original"] == 0.0
    assert exact["score_cached"] == exact["score_fresh"] and exact["score_change_ci"] == [0.0, 0.0]
    assert exact["p50_ms_miss"] > 0
    assert loose["hit_rate"] > 0.9 and loose["hits_from_another_item"] > 0 and loose["p50_ms_hit"] > 0

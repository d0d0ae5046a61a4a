"""The eval-replay speedups are exact: memoised, cached and vectorised paths give the same bits as
the plain computation they replace."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podium.learned import head as head_mod
from podium.learned.head import KnnMemory
from podium.learned.memo import Memo, fingerprint
from podium.learned.rewards import Problem, cascade_rollout, dense_rollout, fit_projection, ridge_warm_start
from podium.learned.simulated_verifier import Verifier, accept_matrix
from podium.learned.stats import bootstrap_means, interval, lower_bound


@pytest.mark.parametrize("turns", [1, 2, 3, 4, 5])
def test_cascade_rollout_matches_the_dense_rollout_bit_for_bit(turns: int) -> None:
    rng = np.random.default_rng(turns)
    for trial in range(12):
        n_pop, n, m = 5, 200, 9
        base = rng.normal(size=(n_pop, n, m)).astype(np.float32 if trial % 3 == 0 else np.float64)
        # near-ties between base logits and failure penalties make any rounding difference show
        w_fail = np.round(rng.normal(size=(n_pop, m, m)), 1) * [1e-3, 1.0, 100.0][trial % 3]
        accept = rng.random((n, m)) < 0.3 if trial % 2 else None
        p = Problem(np.zeros((n, 1)), rng.random((n, m)), rng.random((n, m)) < 0.8, rng.random((n, m)), accept)
        got, want = cascade_rollout(base, w_fail, p, turns), dense_rollout(base, w_fail, p, turns)
        for a, b in zip(got, want):
            assert np.array_equal(a, b)


def test_accept_matrix_draws_once_per_item_and_matches_a_fresh_generator() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random((300, 6))
    v = Verifier(0.2, 0.1, seed=11)
    rows = rng.permutation(5000)[:300]
    expected = np.stack([np.random.default_rng((11, int(r))).random(6) for r in rows])
    want = np.where(scores >= 0.5, expected >= 0.1, expected < 0.2)
    assert np.array_equal(accept_matrix(scores, v, rows), want)
    assert np.array_equal(accept_matrix(scores[::-1], v, rows[::-1]), want[::-1])  # cached draws, other order
    assert np.array_equal(accept_matrix(scores[:50], v, rows[:50]), want[:50])


def test_bootstrap_intervals_reuse_the_same_resamples_as_a_fresh_draw() -> None:
    values = np.random.default_rng(3).normal(size=257)
    idx = np.random.default_rng(0).integers(0, 257, size=(1000, 257))
    boots = values[idx].mean(axis=1)
    tail = (1 - 0.95) / 2
    want = (float(np.quantile(boots, tail)), float(np.quantile(boots, 1 - tail)))
    for _ in range(2):  # the second call hits the cached indices
        assert interval(values) == want
    assert lower_bound(values, 0.05) == float(values.mean() - NormalDist().inv_cdf(0.95) * boots.std())


def test_memo_is_bounded_keyed_by_content_and_read_only() -> None:
    memo = Memo(max_bytes=3 * 800)
    calls = []

    def make(i: int) -> np.ndarray:
        calls.append(i)
        return np.full(100, float(i))

    for i in range(4):
        memo.get(fingerprint(np.arange(5) + i), lambda i=i: make(i))
    assert calls == [0, 1, 2, 3]
    out = memo.get(fingerprint(np.arange(5) + 3), lambda: make(99))  # a copy of the same content hits
    assert calls == [0, 1, 2, 3] and out[0] == 3.0
    memo.get(fingerprint(np.arange(5)), lambda: make(0))  # the oldest was evicted (3 arrays fit)
    assert calls == [0, 1, 2, 3, 0]
    with pytest.raises(ValueError):
        out[0] = 1.0
    assert fingerprint(np.zeros(3, np.float32)) != fingerprint(np.zeros(3, np.float64))
    assert fingerprint(np.zeros((2, 3))) != fingerprint(np.zeros((3, 2)))


def test_memo_for_rows_computes_few_rows_and_memoises_many() -> None:
    from podium.learned.memo import MIN_ROWS

    memo, calls = Memo(max_bytes=1 << 20), []
    for n in (MIN_ROWS - 1, MIN_ROWS - 1, MIN_ROWS, MIN_ROWS):
        rows = np.ones((n, 2))
        memo.for_rows(n, lambda n=n: calls.append(n) or np.zeros(n), "tag", rows)
    assert calls == [MIN_ROWS - 1, MIN_ROWS - 1, MIN_ROWS]  # a single decision is not fingerprinted


def test_memoised_knn_features_and_projection_equal_a_fresh_computation() -> None:
    rng = np.random.default_rng(5)
    emb = rng.normal(size=(400, 48)).astype(np.float32)
    mean, basis = fit_projection(emb, 16, whiten=False)
    assert fit_projection(emb.copy(), 16, whiten=False)[1] is basis  # memoised by content
    memory = KnnMemory(
        mean,
        basis,
        np.zeros((0, 0), np.float32),
        rng.random((400, 4)).astype(np.float32),
        rng.random((400, 4)) < 0.9,
        np.full(4, 0.5, np.float32),
        (5, 20),
        1.0,
    )
    memory.emb = memory.embed(emb)
    assert memory.embed(emb.copy()) is memory.emb  # memoised by content (a RouteLLM slice's copy hits)
    head_mod.EMBEDDED.clear()
    assert np.array_equal(memory.embed(emb), memory.emb) and memory.embed(emb) is not memory.emb
    first = memory.features(emb, np.arange(400))
    head_mod.NEIGHBOURS.clear()
    fresh = memory.features(emb.copy(), np.arange(400))
    again = memory.features(emb, np.arange(400))
    assert np.array_equal(first, fresh) and np.array_equal(first, again)


def test_memoised_knn_baseline_neighbours_equal_a_fresh_search() -> None:
    from podium.learned import baselines

    rng = np.random.default_rng(8)
    train, query = rng.normal(size=(300, 24)).astype(np.float32), rng.normal(size=(64, 24)).astype(np.float32)
    baselines.KNN_NEIGHBOURS.clear()
    misses = baselines.KNN_NEIGHBOURS.misses
    first = baselines.knn_neighbours(train, query, 10)
    again = baselines.knn_neighbours(train.copy(), query.copy(), 10)  # the RouteLLM slice's copies hit
    assert again is first and baselines.KNN_NEIGHBOURS.misses == misses + 1
    sims = query @ train.T
    want = np.argsort(-sims, axis=1, kind="stable")[:, :10]
    assert np.array_equal(first, want)  # no ties in random floats: the stable order is the order
    assert baselines.knn_neighbours(train, query[:5], 10).tolist() == want[:5].tolist()  # few rows: not memoised


def test_freed_memory_is_kept_where_glibc_allows_it() -> None:
    import platform

    from podium.learned.parallel_eval import keep_freed_memory

    assert keep_freed_memory() is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 3000),
    st.sampled_from([(0, 1), (-1, 1), (-40, 40), (-3000, 3000)]),
    st.integers(0, 3),
    st.booleans(),
)
def test_integer_valued_bootstrap_shortcut_equals_the_resampled_means(
    n: int, span: tuple[int, int], seed: int, fractional: bool
) -> None:
    """0/1 scores and their differences take the draw-count product; any other values the plain path.
    Both give the bits of the mean over each resample, as the plain code computes it."""
    rng = np.random.default_rng(n + seed)
    values = rng.integers(span[0], span[1] + 1, n).astype(np.float64)
    if fractional:
        values[rng.integers(n)] += 0.25  # one non-integer value: the plain path
    want = values[np.random.default_rng(seed).integers(0, n, size=(200, n))].mean(axis=1)
    assert bootstrap_means(values, n_boot=200, seed=seed).tobytes() == want.tobytes()


def test_ridge_warm_start_sharing_the_gram_of_equal_masks_is_bit_identical() -> None:
    """Models known on the same rows share ``x'x + reg``: the same product of the same rows, so the
    same bits as building it per model (the loop kept here as the reference)."""
    rng = np.random.default_rng(5)
    n, k, m = 700, 9, 8
    z = np.hstack([rng.normal(size=(n, k)), np.ones((n, 1))])
    available = np.ones((n, m), dtype=bool)
    available[rng.random(n) < 0.2, 3] = False  # model 3 alone; models 5 and 6 share a mask; 7 is never known
    holes = rng.random(n) < 0.1
    available[holes, 5] = available[holes, 6] = False
    available[:, 7] = False
    p = Problem(z, rng.random((n, m)), available, rng.random((n, m)))
    want = np.zeros((k + 1, m))
    reg = 1.5 * np.eye(k + 1)
    reg[-1, -1] = 0.0
    for j in range(m):
        rows = available[:, j]
        if not rows.any():
            want[-1, j] = -10.0
            continue
        x = z[rows]
        want[:, j] = np.linalg.solve(x.T @ x + reg, x.T @ p.scores[rows, j])
        want[-1, j] -= 0.3 * p.cost[rows, j].mean()
    assert ridge_warm_start(p, 1.5, 0.3).tobytes() == want.tobytes()


def test_bootstrap_shortcut_keeps_its_draw_counts_within_the_memory_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    from podium.learned import stats

    values = np.random.default_rng(2).integers(0, 2, 500).astype(np.float64)
    want = values[np.random.default_rng(0).integers(0, 500, size=(100, 500))].mean(axis=1)
    monkeypatch.setattr(stats, "COUNT_CELLS", 100 * 500 - 1)  # one cell short: the plain path
    stats._resample_counts.cache_clear()
    assert bootstrap_means(values, n_boot=100).tobytes() == want.tobytes()
    assert stats._resample_counts.cache_info().currsize == 0
    monkeypatch.setattr(stats, "COUNT_CELLS", 100 * 500)
    assert bootstrap_means(values, n_boot=100).tobytes() == want.tobytes()
    assert stats._resample_counts.cache_info().currsize == 1

"""The chunked tied-head rewards and the flat-index cascade rollout give the same bits as the
whole-array code they replaced (kept here as the reference), so ``eval replay`` numbers do not move."""

from __future__ import annotations

import numpy as np
import pytest

from podium.learned import tied
from podium.learned.rewards import PASS_SCORE, Problem, cascade_rollout, dense_rollout
from podium.learned.tied import TiedParts, tied_cascade_rewards, tied_single_rewards


def reference_rollout(
    base: np.ndarray, w_fail: np.ndarray, p: Problem, turns: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rollout before this change: 2-D fancy indexing over the open (head, item) pairs."""
    n_pop, n, n_models = base.shape
    masked = np.where(p.available[None], base, -np.inf)
    choice = np.argmax(masked, axis=2)
    n_open = p.available.sum(axis=1)
    pp, ii = np.nonzero(np.broadcast_to(n_open > 0, (n_pop, n)))
    cc = choice[pp, ii]
    final, spent, calls = np.zeros((n_pop, n)), np.zeros((n_pop, n)), np.zeros((n_pop, n))
    tried: list[np.ndarray] = []
    penalty = np.zeros((len(pp), n_models), np.result_type(base, w_fail))
    for turn in range(turns):
        if turn:
            logits = masked[pp, ii] + penalty
            rows = np.arange(len(pp))
            for c in tried:
                logits[rows, c] = -np.inf
            cc = np.argmax(logits, axis=1)
        score = p.scores[ii, cc]
        final[pp, ii] = score
        spent[pp, ii] += p.cost[ii, cc]
        calls[pp, ii] += 1.0
        ok = (score >= PASS_SCORE) if p.accept is None else p.accept[ii, cc]
        go = ~ok & (n_open[ii] > turn + 1)
        if turn + 1 < turns:
            penalty = penalty[go] + w_fail[pp[go], cc[go]]
            tried = [c[go] for c in tried] + [cc[go]]
            pp, ii = pp[go], ii[go]
    return final, spent, calls


def reference_tied(thetas: np.ndarray, p: Problem, ridge: np.ndarray, n_knn: int, lam: float, mode: str) -> np.ndarray:
    """The tied rewards before this change: whole (P, n, M) arrays and ``einsum``."""
    n_z, n_models = ridge.shape
    knn = p.z[:, n_z : n_z + n_knn * n_models].reshape(len(p.z), n_knn, n_models).transpose(1, 0, 2)
    return reference_tied_parts(thetas, p, p.z[:, :n_z] @ ridge, np.ascontiguousarray(knn), lam, mode)


def reference_tied_parts(
    thetas: np.ndarray, p: Problem, ridge_z: np.ndarray, knn: np.ndarray, lam: float, mode: str
) -> np.ndarray:
    """:func:`reference_tied` from ``ridge(z)`` and the float32 kNN rates, computed once per problem as before."""
    n_knn, n_models = len(knn), ridge_z.shape[1]
    base = thetas[:, 0, None, None] * ridge_z[None]
    base += np.einsum("pj,jnm->pnm", thetas[:, 1 : 1 + n_knn], knn)
    base += thetas[:, None, 1 + n_knn : 1 + n_knn + n_models]
    if mode == "single":
        unknown = ~p.available
        if unknown.any():
            base[:, unknown] = -np.inf
        choice = np.argmax(base, axis=2)
        rows = np.arange(len(p.z))[None, :]
        return np.asarray((p.scores[rows, choice] - lam * p.cost[rows, choice]).mean(axis=1))
    w_fail = thetas[:, 1 + n_knn + n_models :].reshape(len(thetas), n_models, n_models)
    final, spent, _ = reference_rollout(base, w_fail, p, 3)
    return np.asarray((final - lam * spent).mean(axis=1))


def problem(rng: np.random.Generator, n: int, m: int, trial: int, n_feat: int = 0) -> Problem:
    available = rng.random((n, m)) < (0.8, 1.0, 0.3)[trial % 3]
    available[:3] = False  # items with no model to call
    scores = np.round(rng.random((n, m)), 1).astype(np.float32 if trial % 4 == 0 else np.float64)
    accept = rng.random((n, m)) < 0.4 if trial % 2 else None
    z = rng.normal(size=(n, n_feat)).astype(np.float32)
    return Problem(z, scores, available, rng.random((n, m)) * 3, accept)


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_cascade_rollout_matches_the_fancy_index_rollout_bit_for_bit(turns: int) -> None:
    rng = np.random.default_rng(turns)
    for trial in range(24):
        n_pop, n, m = 1 + trial % 5, 120 + trial, 2 + trial % 8
        base = rng.normal(size=(n_pop, n, m)).astype(np.float32 if trial % 3 == 0 else np.float64)
        w_fail = np.round(rng.normal(size=(n_pop, m, m)), 1) * (1e-3, 1.0, 100.0)[trial % 3]
        w_fail = w_fail.astype(np.float32) if trial % 4 == 1 else w_fail
        p = problem(rng, n, m, trial)
        got, want = cascade_rollout(base, w_fail, p, turns), reference_rollout(base, w_fail, p, turns)
        for a, b in zip(got, want):
            assert a.dtype == b.dtype and np.array_equal(a, b)
        if turns == 3:  # the dense rollout agrees too (and so the older test's reference)
            assert all(np.array_equal(a, b) for a, b in zip(got, dense_rollout(base, w_fail, p, turns)))


@pytest.mark.parametrize("mode", ["single", "cascade"])
@pytest.mark.parametrize(
    "cells", [7, 500, 1 << 16]
)  # blocks of one row, several rows with a partial last one, all rows
def test_chunked_tied_rewards_match_the_whole_array_code_bit_for_bit(
    mode: str, cells: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tied, "CHUNK_CELLS", cells)
    rng = np.random.default_rng(cells)
    for trial in range(12):
        n_pop, n, m, n_knn, k = 1 + trial % 6, 90 + 7 * trial, 2 + trial % 7, 1 + trial % 4, 5
        p = problem(rng, n, m, trial, k + 1 + n_knn * m)
        p.z[:, k] = 1.0
        p.z[:, k + 1 :] = rng.random((n, n_knn * m))  # kNN rates in [0, 1), float32 as in training
        ridge = rng.normal(size=(k + 1, m))
        thetas = rng.normal(size=(n_pop, 1 + n_knn + m + (m * m if mode == "cascade" else 0)))
        thetas[:, 1 + n_knn + m :] = np.round(thetas[:, 1 + n_knn + m :], 1)  # near-ties with the failure penalties
        parts = TiedParts.of(p, ridge, n_knn)
        for lam in (0.0, 0.3):
            want = reference_tied(thetas, p, ridge, n_knn, lam, mode)
            got = (
                tied_single_rewards(thetas, parts, p, lam)
                if mode == "single"
                else tied_cascade_rewards(thetas, parts, p, lam, 3)
            )
            assert got.dtype == want.dtype and np.array_equal(got, want)


def test_tied_logits_equal_the_einsum_logits_bit_for_bit() -> None:
    """The logits themselves, not only the rewards (an argmax hides most rounding differences)."""
    rng = np.random.default_rng(11)
    for trial in range(12):
        n_pop, n, m, n_knn, k = 1 + trial % 6, 64 + trial, 2 + trial % 9, 1 + trial % 4, 4
        p = problem(rng, n, m, trial, k + 1 + n_knn * m)
        p.z[:, k + 1 :] = rng.random((n, n_knn * m))
        ridge = rng.normal(size=(k + 1, m))
        thetas = rng.normal(size=(n_pop, 1 + n_knn + m)) * 10.0 ** rng.integers(-3, 3, size=(1, 1 + n_knn + m))
        knn = p.z[:, k + 1 :].reshape(n, n_knn, m).transpose(1, 0, 2)
        want = thetas[:, 0, None, None] * (p.z[:, : k + 1] @ ridge)[None]
        want += np.einsum("pj,jnm->pnm", thetas[:, 1 : 1 + n_knn], np.ascontiguousarray(knn))
        want += thetas[:, None, 1 + n_knn :]
        want[:, ~p.available] = -np.inf
        got, rows = np.empty_like(want), slice(5, n - 3)
        tied.tied_block(got[:, rows], np.empty_like(got[:, rows]), thetas, TiedParts.of(p, ridge, n_knn), rows)
        assert np.array_equal(got[:, rows], want[:, rows])


def near_tie_problem(
    rng: np.random.Generator, n_pop: int, n: int, m: int, n_knn: int, k: int, extra: int = 0
) -> tuple[Problem, np.ndarray, np.ndarray]:
    """Models in pairs whose logits differ by ε ∈ {0, ±1e-12, ±1e-9} on every row although their
    terms differ (the second's ridge bias is δ higher and its c lower by γ·δ): float32 rounds
    the two sides differently and orders many pairs wrongly; the float64 code does not."""
    p = problem(rng, n, m, 1, k + 1 + n_knn * m)
    p.z[:, k] = 1.0
    rates = rng.random((n, n_knn, m)).astype(np.float32)
    rates[:, :, 1::2] = rates[:, :, 0::2]
    p.z[:, k + 1 :] = rates.reshape(n, -1)
    ridge = rng.normal(size=(k + 1, m))
    ridge[:, 1::2] = ridge[:, 0::2]
    ridge[k, 1::2] += 0.37
    thetas = rng.normal(size=(n_pop, 1 + n_knn + m + extra))
    c = thetas[:, 1 + n_knn : 1 + n_knn + m]
    eps = rng.choice([0.0, 1e-12, -1e-12, 1e-9, -1e-9], size=(n_pop, m // 2))
    c[:, 1::2] = c[:, 0::2] - thetas[:, :1] * 0.37 + eps
    return p, ridge, thetas


def test_float32_choice_is_the_float64_argmax_on_ties_and_near_ties() -> None:
    """The float32 pass cannot order these rows; the margin sends them to the exact logits."""
    rng = np.random.default_rng(5)
    naive_wrong = 0
    for trial in range(10):
        n_pop, n, m, n_knn, k = 1 + trial % 4, 200 + trial, 4 + 2 * (trial % 4), 1 + trial % 3, 6
        p, ridge, thetas = near_tie_problem(rng, n_pop, n, m, n_knn, k)
        parts = TiedParts.of(p, ridge, n_knn)
        exact = np.empty((n_pop, n, m))
        tied.tied_block(exact, np.empty_like(exact), thetas, parts, slice(0, n))
        want = np.argmax(exact, axis=2)
        assert np.array_equal(tied.tied_choice(thetas, parts), want)
        t32, r32, k32 = thetas.astype(np.float32), parts.ridge_z.astype(np.float32), parts.knn.astype(np.float32)
        naive32 = t32[:, 0, None, None] * r32[None] + np.einsum("pj,jnm->pnm", t32[:, 1 : 1 + n_knn], k32)
        naive32 += t32[:, None, 1 + n_knn :]
        naive32[:, ~p.available] = -np.inf
        naive_wrong += int((np.argmax(naive32, axis=2) != want).sum())
        for lam in (0.0, 0.3):  # and so the rewards, in both modes
            assert np.array_equal(
                tied_single_rewards(thetas, parts, p, lam), reference_tied(thetas, p, ridge, n_knn, lam, "single")
            )
    assert naive_wrong > 0  # float32 logits alone would change choices here


def test_cascade_turns_after_the_first_follow_the_float64_logits_on_near_ties() -> None:
    rng = np.random.default_rng(6)
    for trial in range(10):
        n_pop, n, m, n_knn, k = 1 + trial % 4, 150 + trial, 4 + 2 * (trial % 3), 1 + trial % 3, 5
        p, ridge, thetas = near_tie_problem(rng, n_pop, n, m, n_knn, k, m * m)
        w_fail = thetas[:, 1 + n_knn + m :].reshape(n_pop, m, m)
        w_fail[:] = np.round(w_fail, 1)
        w_fail[:, :, 1::2] = w_fail[:, :, 0::2]  # the penalties keep each pair's near-tie
        parts = TiedParts.of(p, ridge, n_knn)
        for turns in (2, 3, 4):  # 4: longer cascades take the exact blocks and the dense rollout
            got = tied_cascade_rewards(thetas, parts, p, 0.3, turns)
            exact = np.empty((n_pop, n, m))
            tied.tied_block(exact, np.empty_like(exact), thetas, parts, slice(0, n))
            final, spent, _ = cascade_rollout(exact, w_fail, p, turns, masked=True)
            assert np.array_equal(got, (final - 0.3 * spent).mean(axis=1))
        got = tied_cascade_rewards(thetas, parts, p, 0.3, 3)
        assert np.array_equal(got, reference_tied(thetas, p, ridge, n_knn, 0.3, "cascade"))

"""The routing objective as array code: the arrays one evaluation needs (:class:`Problem`), the
rewards of a population of candidate heads in single and cascade mode, the ridge warm start and the
PCA projection of the encodings. Pure numpy, no optimiser state (that is :mod:`.train`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import cast

import numpy as np

from .memo import Memo
from .replay import ReplayDataset
from .simulated_verifier import PASS_SCORE, Verifier, accept_matrix

Pick = Callable[[np.ndarray, np.ndarray, list[np.ndarray]], np.ndarray]  # (flat, penalty, tried) -> models


@dataclass
class Problem:
    """The arrays one objective evaluation needs (rows = items)."""

    z: np.ndarray  # (n, k + 1) projected encoding and bias
    scores: np.ndarray  # (n, M), unknown filled with 0 (and masked out by ``available``)
    available: np.ndarray  # (n, M) bool: outcome known
    cost: np.ndarray  # (n, M) cost in mean-call units
    accept: np.ndarray | None = None  # (n, M) bool: the cascade's verifier accepts; None: score ≥ PASS_SCORE

    @classmethod
    def build(
        cls, z: np.ndarray, ds: ReplayDataset, rows: np.ndarray, cost_unit: float, verifier: Verifier | None = None
    ) -> Problem:
        known = ds.known[rows]
        scores = np.nan_to_num(ds.scores[rows])
        accept = None if verifier is None or verifier.perfect else accept_matrix(scores, verifier, rows)
        return cls(z, scores, known, ds.costs[rows] / cost_unit, accept)


PROJECTIONS = Memo(256 << 20)  # the same rows' PCA recurs (e.g. a RouteLLM slice that keeps every row)


def fit_projection(emb: np.ndarray, k: int, seed: int = 0, whiten: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (whitened, or orthonormal) PCA basis (D, k) of ``emb``, by randomized SVD (seeded).

    Memoised by content (:mod:`podium.learned.memo`): the arrays returned are read-only."""
    return PROJECTIONS.for_rows(len(emb), lambda: _fit_projection(emb, k, seed, whiten), "pca", emb, k, seed, whiten)


def _fit_projection(emb: np.ndarray, k: int, seed: int, whiten: bool) -> tuple[np.ndarray, np.ndarray]:
    mean = emb.mean(axis=0)
    x = (emb - mean).astype(np.float32)
    k = max(1, min(k, x.shape[1], len(x) - 1))
    y = x @ np.random.default_rng(seed).standard_normal((x.shape[1], k + 16)).astype(np.float32)
    for _ in range(2):  # power iterations sharpen the leading subspace
        y = x @ (x.T @ np.linalg.qr(y)[0])
    q = np.linalg.qr(y)[0]
    _, sing, vt = np.linalg.svd(q.T @ x, full_matrices=False)
    scale = np.maximum(sing[:k] / np.sqrt(max(len(x) - 1, 1)), 1e-6) if whiten else np.ones(min(k, len(sing)))
    return mean.astype(np.float32), (vt[:k].T / scale).astype(np.float32)


def ridge_warm_start(p: Problem, alpha: float, lam: float) -> np.ndarray:
    """(k + 1, M) weights: per-model ridge fit of score on ``z``, minus λ·the model's mean cost."""
    n_feat, n_models = p.z.shape[1], p.scores.shape[1]
    w = np.zeros((n_feat, n_models))
    reg = alpha * np.eye(n_feat)
    reg[-1, -1] = 0.0  # the bias is not shrunk
    grams: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}  # models known on the same rows share x and x'x + reg
    for m in range(n_models):
        rows = p.available[:, m]
        if rows.sum() == 0:
            w[-1, m] = -10.0
            continue
        key = np.packbits(rows).tobytes()
        if key not in grams:
            x = p.z[rows]
            grams[key] = (x, x.T @ x + reg)
        x, gram = grams[key]
        w[:, m] = np.linalg.solve(gram, x.T @ p.scores[rows, m])
        w[-1, m] -= lam * p.cost[rows, m].mean()
    return w


def single_rewards(weights: np.ndarray, p: Problem, lam: float) -> np.ndarray:
    """Mean reward of each of P candidate weight sets (P, k + 1, M) in single mode."""
    logits = np.einsum("nf,pfm->pnm", p.z, weights, optimize=True)
    logits = np.where(p.available[None], logits, -np.inf)
    choice = np.argmax(logits, axis=2)
    rows = np.arange(len(p.z))[None, :]
    reward = p.scores[rows, choice] - lam * p.cost[rows, choice]
    return cast(np.ndarray, reward.mean(axis=1))


def cascade_rollout(
    base: np.ndarray, w_fail: np.ndarray, p: Problem, turns: int, masked: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the cascade for P heads: returns final score (P, n), summed cost (P, n), calls (P, n).

    Turn t's logits are ``base + failed @ w_fail`` over the models not yet tried (``masked``:
    ``base`` already holds ``-inf`` where an outcome is unknown). After the first turn only the
    (head, item) pairs still open are rolled on, and the failed models' rows of ``w_fail`` are
    summed directly: with 0/1 indicators and at most two failures (``turns`` ≤ 3) any summation
    order gives the same ``fl(a + b)`` as the matrix product, so the outcome is bit-identical to
    :func:`dense_rollout` (used for longer cascades)."""
    if turns > 3:
        return dense_rollout(base, w_fail, p, turns)
    logits = base if masked else np.where(p.available[None], base, -np.inf)
    return rollout_from(logits, np.argmax(logits, axis=2), w_fail, p, turns)


def rollout_from(
    masked: np.ndarray | None,
    choice: np.ndarray,
    w_fail: np.ndarray,
    p: Problem,
    turns: int,
    pick: Pick | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`cascade_rollout` from the masked logits (P, n, M) and their row-wise argmax (P, n).

    Turn 1 is dense (every head and item); later turns follow the open pairs by flat indices
    into the (P·n) rows, which is the same arithmetic as 2-D fancy indexing with fewer passes.
    ``pick(flat, penalty, tried)``, if given, makes the later turns' choices instead of the argmax of
    ``masked`` (which may then be None): the untried model with the largest masked logit plus
    penalty, for the (P·n) rows ``flat``."""
    (n_pop, n), n_models = choice.shape, p.scores.shape[1]
    n_open = p.available.sum(axis=1)
    live = n_open > 0
    idx = choice + (np.arange(n) * n_models)[None]  # item-model cell of each (head, item)
    score = p.scores.ravel()[idx]
    final, spent, calls = np.zeros((n_pop, n)), np.zeros((n_pop, n)), np.zeros((n_pop, n))
    np.copyto(final, score, where=live)
    np.add(spent, p.cost.ravel()[idx], out=spent, where=live)
    np.add(calls, 1.0, out=calls, where=live)
    if turns == 1:
        return final, spent, calls
    ok = (score >= PASS_SCORE) if p.accept is None else p.accept.ravel()[idx]
    flat = np.flatnonzero(~ok & (n_open > 1))  # rejected, and an untried model is left
    pp, ii, cc = flat // n, flat % n, choice.ravel()[flat]
    w_rows = w_fail.reshape(n_pop * n_models, n_models)
    dtype = np.result_type(np.float64 if masked is None else masked, w_fail)
    penalty = np.take(w_rows, pp * n_models + cc, axis=0).astype(dtype, copy=False) + 0.0  # zeros + w_fail[pp, cc]
    tried = [cc]
    if pick is None:
        assert masked is not None
        pick = partial(pick_untried, masked.reshape(n_pop * n, n_models))
    outs = final.ravel(), spent.ravel(), calls.ravel()
    for turn in range(1, turns):
        cc = pick(flat, penalty, tried)
        cell = ii * n_models + cc
        score = p.scores.ravel()[cell]
        outs[0][flat] = score
        outs[1][flat] += p.cost.ravel()[cell]
        outs[2][flat] += 1.0
        if turn + 1 < turns:
            ok = (score >= PASS_SCORE) if p.accept is None else p.accept.ravel()[cell]
            keep = np.flatnonzero(~ok & (n_open[ii] > turn + 1))
            penalty = np.take(penalty, keep, axis=0) + np.take(w_rows, pp[keep] * n_models + cc[keep], axis=0)
            tried = [c[keep] for c in tried] + [cc[keep]]
            flat, pp, ii = flat[keep], pp[keep], ii[keep]
    return final, spent, calls


def untried_logits(rows: np.ndarray, flat: np.ndarray, penalty: np.ndarray, tried: list[np.ndarray]) -> np.ndarray:
    """``rows[flat] + penalty`` with the models already tried at ``−inf`` (one row per open pair)."""
    logits: np.ndarray = np.take(rows, flat, axis=0) + penalty
    cells = np.arange(len(flat)) * rows.shape[1]
    for c in tried:
        logits.ravel()[cells + c] = -np.inf
    return logits


def pick_untried(rows: np.ndarray, flat: np.ndarray, penalty: np.ndarray, tried: list[np.ndarray]) -> np.ndarray:
    """The argmax of :func:`untried_logits`: the next model of each open pair."""
    return cast(np.ndarray, np.argmax(untried_logits(rows, flat, penalty, tried), axis=1))


def dense_rollout(
    base: np.ndarray, w_fail: np.ndarray, p: Problem, turns: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`cascade_rollout` for every (head, item) pair at every turn, as a matrix product."""
    n_pop, n, n_models = base.shape
    rows = np.arange(n)[None, :].repeat(n_pop, 0)
    pops = np.arange(n_pop)[:, None].repeat(n, 1)
    failed = np.zeros((n_pop, n, n_models), dtype=bool)
    done = np.zeros((n_pop, n), dtype=bool)
    final, spent, calls = np.zeros((n_pop, n)), np.zeros((n_pop, n)), np.zeros((n_pop, n))
    for _ in range(turns):
        logits = base + np.matmul(failed.astype(base.dtype), w_fail)
        open_ = p.available[None] & ~failed
        choice = np.argmax(np.where(open_, logits, -np.inf), axis=2)
        act = ~done & open_.any(axis=2)
        score, cost = p.scores[rows, choice], p.cost[rows, choice]
        final = np.where(act, score, final)
        spent += np.where(act, cost, 0.0)
        calls += act
        done |= act & ((score >= PASS_SCORE) if p.accept is None else p.accept[rows, choice])
        failed[pops[act], rows[act], choice[act]] = True
    return final, spent, calls


def cascade_rewards(weights: np.ndarray, p: Problem, lam: float, turns: int) -> np.ndarray:
    """Mean reward of each of P candidate weight sets (P, k + 1 + M, M) in cascade mode."""
    n_feat = p.z.shape[1]
    base = np.einsum("nf,pfm->pnm", p.z, weights[:, :n_feat], optimize=True)
    final, spent, _ = cascade_rollout(base, weights[:, n_feat:], p, turns)
    return cast(np.ndarray, (final - lam * spent).mean(axis=1))

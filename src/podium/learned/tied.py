"""Rewards of a population of tied-parameter heads ``(γ, a, c[, W_fail])``, in row chunks.

A tied head's model logits are ``γ · ridge(z) + Σ_j a_j · knn_j + c`` (see :mod:`podium.learned.train`).
One CMA-ES generation evaluates them for P candidates on every fit row: (P, n, M) arrays of tens of
MB, built in several passes. Here they are built a block of rows at a time into buffers that stay
in cache, with the very same floating-point operations on every element as the whole-array code
(``fl(fl(γ·r) + fl(fl(a₀k₀ + a₁k₁) + a₂k₂)) + c``, the order ``einsum`` sums in), so each logit, each
argmax and each reward is bit-identical (``tests/learned/test_replay_exact_speedups.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np

from .rewards import Problem, rollout_from

CHUNK_CELLS = 1 << 16  # (head, row, model) cells per block: 512 KiB of float64 per buffer


@dataclass(frozen=True)
class TiedParts:
    """What the tied logits of one problem need, computed once per problem."""

    ridge_z: np.ndarray  # (n, M) float64: ``z @ ridge``
    knn: np.ndarray  # (n_knn, n, M) float64: the kNN rates, widened exactly from float32
    unknown: np.ndarray | None  # (n, M) bool, None when every outcome is known

    @classmethod
    def of(cls, p: Problem, ridge: np.ndarray, n_knn: int) -> TiedParts:
        n_z, n_models = ridge.shape
        knn = p.z[:, n_z : n_z + n_knn * n_models].reshape(len(p.z), n_knn, n_models).transpose(1, 0, 2)
        unknown = ~p.available
        return cls(p.z[:, :n_z] @ ridge, knn.astype(np.float64), unknown if unknown.any() else None)


def _block_rows(n_pop: int, n_models: int) -> int:
    return max(1, CHUNK_CELLS // max(n_pop * n_models, 1))


def tied_block(out: np.ndarray, tmp: np.ndarray, thetas: np.ndarray, parts: TiedParts, rows: slice) -> None:
    """Masked tied logits of ``rows`` into ``out`` (P, len, M); ``tmp`` is scratch of the same shape."""
    n_knn, n_models = len(parts.knn), parts.ridge_z.shape[1]
    np.multiply(thetas[:, 0, None, None], parts.ridge_z[None, rows], out=out)
    if n_knn:
        acc = np.multiply(thetas[:, 1, None, None], parts.knn[0, None, rows])
        for j in range(1, n_knn):
            np.multiply(thetas[:, 1 + j, None, None], parts.knn[j, None, rows], out=tmp)
            acc += tmp
        out += acc
    out += thetas[:, None, 1 + n_knn : 1 + n_knn + n_models]
    if parts.unknown is not None:
        np.copyto(out, -np.inf, where=parts.unknown[None, rows])


def tied_single_rewards(thetas: np.ndarray, parts: TiedParts, p: Problem, lam: float) -> np.ndarray:
    """Mean reward (P,) of single-mode tied heads: the recorded score − λ·cost of each row's argmax."""
    n_pop, (n, n_models) = len(thetas), parts.ridge_z.shape
    step = _block_rows(n_pop, n_models)
    buf, tmp = np.empty((n_pop, step, n_models)), np.empty((n_pop, step, n_models))
    reward = np.empty((n_pop, n))
    scores, cost = p.scores.ravel(), p.cost.ravel()
    for start in range(0, n, step):
        stop = min(start + step, n)
        out = buf[:, : stop - start]
        tied_block(out, tmp[:, : stop - start], thetas, parts, slice(start, stop))
        cell = np.argmax(out, axis=2) + (np.arange(start, stop) * n_models)[None]
        reward[:, start:stop] = scores[cell] - lam * cost[cell]
    return cast(np.ndarray, reward.mean(axis=1))


def tied_cascade_rewards(thetas: np.ndarray, parts: TiedParts, p: Problem, lam: float, turns: int) -> np.ndarray:
    """Mean reward (P,) of cascade-mode tied heads (:func:`podium.learned.rewards.cascade_rollout`)."""
    n_pop, (n, n_models) = len(thetas), parts.ridge_z.shape
    n_knn = len(parts.knn)
    w_fail = thetas[:, 1 + n_knn + n_models :].reshape(n_pop, n_models, n_models)
    step = _block_rows(n_pop, n_models)
    masked, tmp = np.empty((n_pop, n, n_models)), np.empty((n_pop, step, n_models))
    choice = np.empty((n_pop, n), dtype=np.intp)
    for start in range(0, n, step):
        stop = min(start + step, n)
        tied_block(masked[:, start:stop], tmp[:, : stop - start], thetas, parts, slice(start, stop))
        choice[:, start:stop] = np.argmax(masked[:, start:stop], axis=2)
    if turns > 3:
        from .rewards import dense_rollout

        final, spent, _ = dense_rollout(masked, w_fail, p, turns)
    else:
        final, spent, _ = rollout_from(masked, choice, w_fail, p, turns)
    return cast(np.ndarray, (final - lam * spent).mean(axis=1))

"""Rewards of a population of tied-parameter heads ``(γ, a, c[, W_fail])``, in row blocks.

A tied head's model logits are ``γ · ridge(z) + Σ_j a_j · knn_j + c`` (see :mod:`podium.learned.train`).
One CMA-ES generation evaluates them for P candidates on every fit row and keeps only each row's
argmax (and, in cascade mode, the logits of the (head, item) pairs still open after the first turn).

The reference value of a logit is the float64 expression ``fl(fl(γ·r) + fl(fl(a₀k₀ + a₁k₁) + a₂k₂)) + c``
(:func:`tied_block`, :func:`exact_rows`). The argmax is found without building it: one float32
matrix product per block of rows gives every logit to within a proven bound of its reference
value (:func:`margin`), and a row whose runner-up comes within twice that bound of its best is
recomputed with the reference expression. So each choice, and hence each reward, is the one the
float64 code makes, bit for bit (``tests/learned/test_tied_rewards_exact.py``); only the logits that
merely feed the comparison are approximate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import numpy as np

from .rewards import Problem, dense_rollout, pick_untried, rollout_from, untried_logits

CHUNK_CELLS = 1 << 16  # (head, row, model) cells per block: 512 KiB of float64 per buffer
FAST_CELLS = 1 << 17  # cells per block of the float32 argmax (256 KiB)
U32 = 2.0**-24  # unit roundoff of float32
Block = tuple[int, int, np.ndarray, np.ndarray | None]  # start, stop, float32 features, float32 mask


@dataclass
class TiedParts:
    """What the tied logits of one problem need, computed once per problem."""

    ridge_z: np.ndarray  # (n, M) float64: ``z @ ridge``
    knn: np.ndarray  # (n_knn, n, M) float64: the kNN rates, widened exactly from float32
    unknown: np.ndarray | None  # (n, M) bool, None when every outcome is known
    _blocks: dict[int, list[Block]] = field(default_factory=dict)  # per block row count
    _absmax: np.ndarray | None = None

    @classmethod
    def of(cls, p: Problem, ridge: np.ndarray, n_knn: int) -> TiedParts:
        n_z, n_models = ridge.shape
        knn = p.z[:, n_z : n_z + n_knn * n_models].reshape(len(p.z), n_knn, n_models).transpose(1, 0, 2)
        unknown = ~p.available
        return cls(p.z[:, :n_z] @ ridge, knn.astype(np.float64), unknown if unknown.any() else None)

    def absmax(self) -> np.ndarray:
        """(1 + n_knn,) largest magnitude of ``ridge(z)`` and of each kNN rate (bounds every term)."""
        if self._absmax is None:
            stack = [self.ridge_z, *self.knn]
            self._absmax = np.array([float(np.abs(a).max()) if a.size else 0.0 for a in stack])
        return self._absmax

    def blocks(self, rows: int) -> list[Block]:
        """(start, stop, features (1 + n_knn, M·r) float32 model-major, 0/−inf mask (M, r) float32) per block."""
        if rows not in self._blocks:
            n = len(self.ridge_z)
            stack = np.concatenate([self.ridge_z[None], self.knn]).astype(np.float32)
            out = []
            for start in range(0, n, rows):
                stop = min(start + rows, n)
                feats = np.ascontiguousarray(stack[:, start:stop].transpose(0, 2, 1)).reshape(len(stack), -1)
                mask = None
                if self.unknown is not None and self.unknown[start:stop].any():
                    mask = np.where(self.unknown[start:stop].T, -np.inf, 0.0).astype(np.float32)
                out.append((start, stop, feats, mask))
            self._blocks[rows] = out
        return self._blocks[rows]


def _block_rows(n_pop: int, n_models: int, cells: int | None = None) -> int:
    return max(1, (CHUNK_CELLS if cells is None else cells) // max(n_pop * n_models, 1))


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


def exact_rows(thetas: np.ndarray, parts: TiedParts, pp: np.ndarray, ii: np.ndarray) -> np.ndarray:
    """(len, M) masked logits of the (head ``pp``, row ``ii``) pairs, element for element :func:`tied_block`'s."""
    n_knn, n_models = len(parts.knn), parts.ridge_z.shape[1]
    out = thetas[pp, 0, None] * parts.ridge_z[ii]
    if n_knn:
        acc = thetas[pp, 1, None] * parts.knn[0, ii]
        for j in range(1, n_knn):
            acc += thetas[pp, 1 + j, None] * parts.knn[j, ii]
        out += acc
    out += thetas[pp, 1 + n_knn : 1 + n_knn + n_models]
    if parts.unknown is not None:
        np.copyto(out, -np.inf, where=parts.unknown[ii])
    return cast(np.ndarray, out)


def margin(thetas: np.ndarray, parts: TiedParts) -> np.ndarray:
    """(P,) a bound, twice over, on the distance between a float32 logit and its float64 reference.

    A logit sums K = 1 + n_knn products and c. Rounding the inputs to float32 (2 roundings per
    product), the products, the K + 1 additions in any order (fused or not) and the reference's own
    float64 roundings move it by at most (K + 4)·u·S, u = 2⁻²⁴, S = |γ|·max|r| + Σ|a_j|·max|k_j| + max|c|
    (first order; the factor 2 covers the rest). Two logits further apart than twice this keep
    their order."""
    n_feat, n_models = 1 + len(parts.knn), parts.ridge_z.shape[1]
    scale = np.abs(thetas[:, :n_feat]) @ parts.absmax()
    scale += np.abs(thetas[:, n_feat : n_feat + n_models]).max(axis=1, initial=0.0)
    return cast(np.ndarray, 2.0 * (n_feat + 4) * U32 * scale)


def tied_choice(thetas: np.ndarray, parts: TiedParts, approx: np.ndarray | None = None) -> np.ndarray:
    """(P, n) argmax of the masked tied logits, the very choice ``np.argmax`` makes on :func:`tied_block`'s.

    Float32 logits per block, model-major (P, M, r): a row counts as decided when no other model
    comes within ``2·margin`` of its best; the others are recomputed exactly (:func:`exact_rows`).
    A row with every outcome unknown is all ``−inf`` and picks model 0, as ``np.argmax`` does.
    ``approx`` (P, n, M) float32, if given, receives the float32 logits."""
    n_pop, (n, n_models) = len(thetas), parts.ridge_z.shape
    n_feat = 1 + len(parts.knn)
    coef = np.ascontiguousarray(thetas[:, :n_feat], dtype=np.float32)
    bias = np.ascontiguousarray(thetas[:, n_feat : n_feat + n_models], dtype=np.float32)[:, :, None]
    slack = (2.0 * margin(thetas, parts)).astype(np.float32)[:, None, None]
    choice = np.empty((n_pop, n), dtype=np.intp)
    index_count = np.stack([np.arange(n_models), np.ones(n_models)]).astype(np.float32)
    for start, stop, feats, mask in parts.blocks(_block_rows(n_pop, n_models, FAST_CELLS)):
        out = (coef @ feats).reshape(n_pop, n_models, stop - start)
        out += bias
        if mask is not None:
            out += mask[None]
        if approx is not None:
            approx[:, start:stop] = out.transpose(0, 2, 1)
        near = (out >= out.max(axis=1, keepdims=True) - slack).astype(np.float32)
        found = np.matmul(index_count, near)  # (P, 2, r): the near models' index sum and count, exact
        choice[:, start:stop] = found[:, 0]  # the index of the only near model, where there is one
        pp, ii = np.nonzero(found[:, 1] > 1.5)
        if len(pp):
            choice[pp, start + ii] = np.argmax(exact_rows(thetas, parts, pp, start + ii), axis=1)
    return choice


@dataclass
class UntriedPick:
    """The cascade's later turns (:data:`podium.learned.rewards.Pick`) from float32 logits, verified.

    The approximate logit of an open pair is its float32 logit plus the (float64) failure penalty;
    where the runner-up among the untried models comes within the slack of the best, the pair's
    exact logits decide (:func:`exact_rows` plus the same penalty). The slack is ``2·margin`` plus
    a bound on the float64 addition's rounding (the penalty sums at most ``turns − 1`` rows of
    ``W_fail``)."""

    thetas: np.ndarray
    parts: TiedParts
    approx: np.ndarray  # (P·n, M) float32 logits
    slack: np.ndarray  # (P,)

    @classmethod
    def of(
        cls, thetas: np.ndarray, parts: TiedParts, approx: np.ndarray, w_fail: np.ndarray, turns: int
    ) -> UntriedPick:
        w_max = np.abs(w_fail).reshape(len(w_fail), -1).max(axis=1, initial=0.0)
        bound = margin(thetas, parts)
        scale = bound / (2.0 * (len(parts.knn) + 5) * U32)  # ≥ S of :func:`margin`
        return cls(thetas, parts, approx, 2.0 * bound + 2.0**-48 * (scale + turns * w_max))

    def __call__(self, flat: np.ndarray, penalty: np.ndarray, tried: list[np.ndarray]) -> np.ndarray:
        n, n_models = self.parts.ridge_z.shape
        logits = untried_logits(self.approx, flat, penalty, tried)
        choice = np.argmax(logits, axis=1)
        best = logits.ravel()[np.arange(len(flat)) * n_models + choice]
        near = logits >= (best - self.slack[flat // n])[:, None]
        if np.count_nonzero(near) != len(flat):
            amb = np.flatnonzero(near.sum(axis=1) > 1)
            exact = exact_rows(self.thetas, self.parts, flat[amb] // n, flat[amb] % n)
            choice[amb] = pick_untried(exact, np.arange(len(amb)), penalty[amb], [c[amb] for c in tried])
        return cast(np.ndarray, choice)


def tied_single_rewards(thetas: np.ndarray, parts: TiedParts, p: Problem, lam: float) -> np.ndarray:
    """Mean reward (P,) of single-mode tied heads: the recorded score − λ·cost of each row's argmax."""
    n_models = parts.ridge_z.shape[1]
    cell = tied_choice(thetas, parts) + (np.arange(len(parts.ridge_z)) * n_models)[None]
    reward = p.scores.ravel()[cell] - lam * p.cost.ravel()[cell]
    return cast(np.ndarray, reward.mean(axis=1))


def tied_cascade_rewards(thetas: np.ndarray, parts: TiedParts, p: Problem, lam: float, turns: int) -> np.ndarray:
    """Mean reward (P,) of cascade-mode tied heads (:func:`podium.learned.rewards.cascade_rollout`).

    Up to 3 turns: the first turn's choice is :func:`tied_choice`, and later turns add failure
    penalties to the float32 logits of the pairs still open, verified like it (:class:`UntriedPick`).
    Longer cascades roll out the exact logits of every block (:func:`tied_block`) as before."""
    n_pop, (n, n_models) = len(thetas), parts.ridge_z.shape
    n_knn = len(parts.knn)
    w_fail = thetas[:, 1 + n_knn + n_models :].reshape(n_pop, n_models, n_models)
    if turns > 3:
        step = _block_rows(n_pop, n_models)
        masked, tmp = np.empty((n_pop, n, n_models)), np.empty((n_pop, step, n_models))
        for start in range(0, n, step):
            stop = min(start + step, n)
            tied_block(masked[:, start:stop], tmp[:, : stop - start], thetas, parts, slice(start, stop))
        final, spent, _ = dense_rollout(masked, w_fail, p, turns)
    else:
        approx = np.empty((n_pop, n, n_models), dtype=np.float32)
        choice = tied_choice(thetas, parts, approx)
        pick = UntriedPick.of(thetas, parts, approx.reshape(n_pop * n, n_models), w_fail, turns)
        final, spent, _ = rollout_from(None, choice, w_fail, p, turns, pick)
    return cast(np.ndarray, (final - lam * spent).mean(axis=1))

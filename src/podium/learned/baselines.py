"""Baseline routers for replay evaluation: kNN, a per-model logistic predictor, RouteLLM's
matrix-factorisation router, and the best model per task label.

Each fits on train rows and predicts a score per (item, model); a router picks the model with the
best prediction (minus λ × its mean cost) among those whose outcome is known.
"""

from __future__ import annotations

import numpy as np

from .memo import Memo

KNN_NEIGHBOURS = Memo(64 << 20)  # the RouteLLM slice searches the same rows again when it keeps them all


def knn_neighbours(train_emb: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` most similar train rows per query row, most similar first (cosine).

    Memoised by content for many queries (:mod:`podium.learned.memo`): the array is then read-only."""
    return KNN_NEIGHBOURS.for_rows(len(query), lambda: _knn_neighbours(train_emb, query, k), "knn", train_emb, query, k)


def _knn_neighbours(train_emb: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    k = min(k, len(train_emb))
    out = np.zeros((len(query), k), dtype=np.int64)
    for start in range(0, len(query), 1024):
        sims = query[start : start + 1024] @ train_emb.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
        out[start : start + 1024] = np.take_along_axis(top, order, axis=1)
    return out


def knn_from_neighbours(
    neighbours: np.ndarray, train_scores: np.ndarray, train_known: np.ndarray, k: int
) -> np.ndarray:
    """Mean score of each model over the first ``k`` neighbours (known outcomes only)."""
    top = neighbours[:, :k]
    filled, weight = np.nan_to_num(train_scores) * train_known, train_known.astype(float)
    num, den = filled[top].sum(axis=1), weight[top].sum(axis=1)
    return np.where(den > 0, num / np.maximum(den, 1e-9), 0.0)


def knn_predict(
    train_emb: np.ndarray, train_scores: np.ndarray, train_known: np.ndarray, query: np.ndarray, k: int
) -> np.ndarray:
    """Mean score of each model over the ``k`` most similar train items (cosine; known outcomes only)."""
    return knn_from_neighbours(knn_neighbours(train_emb, query, k), train_scores, train_known, k)


def fit_logistic(
    x: np.ndarray, y: np.ndarray, known: np.ndarray, steps: int = 200, l2: float = 1e-4, lr: float = 0.05, seed: int = 0
) -> np.ndarray:
    """Per-model logistic regression (soft labels, masked unknowns) by full-batch Adam; returns (D+1, M)."""
    xb = np.hstack([x, np.ones((len(x), 1), x.dtype)]).astype(np.float32)
    xt = np.ascontiguousarray(xb.T)  # the same product as ``xb.T @ g``, without a transposed operand (2x faster)
    target = np.nan_to_num(y).astype(np.float32)
    mask = known.astype(np.float32)
    w = np.random.default_rng(seed).normal(0, 1e-3, (xb.shape[1], y.shape[1])).astype(np.float32)
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t in range(1, steps + 1):
        prob = 1.0 / (1.0 + np.exp(-(xb @ w)))
        grad = xt @ ((prob - target) * mask) / np.maximum(mask.sum(axis=0), 1) + l2 * w
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad**2
        w -= lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    return w


def predict_logistic(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Predicted score per model."""
    pred: np.ndarray = 1.0 / (1.0 + np.exp(-(np.hstack([x, np.ones((len(x), 1), x.dtype)]) @ w)))
    return pred


def fit_mf(
    x: np.ndarray,
    y: np.ndarray,
    known: np.ndarray,
    dim: int = 16,
    steps: int = 300,
    l2: float = 1e-4,
    lr: float = 0.02,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RouteLLM-style matrix factorisation: ``score(m, q) = σ(v_m · (P q) + b_m)``.

    RouteLLM's MF router scores a (model, query) pair by a bilinear form of a learned model
    embedding and a projection of the query embedding, trained on pairwise preferences. Replay data
    records each model's own outcome, so the same bilinear form is fitted pointwise here (logistic
    loss on known outcomes, full-batch Adam, seeded). Returns ``(P (dim, D), V (M, dim), b (M,))``.
    """
    rng = np.random.default_rng(seed)
    x = x.astype(np.float32)
    target, mask = np.nan_to_num(y).astype(np.float32), known.astype(np.float32)
    params = [
        rng.normal(0, 0.1 / np.sqrt(x.shape[1]), (dim, x.shape[1])).astype(np.float32),
        rng.normal(0, 0.1, (y.shape[1], dim)).astype(np.float32),
        np.zeros(y.shape[1], np.float32),
    ]
    moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
    count = np.maximum(mask.sum(axis=0), 1)
    for t in range(1, steps + 1):
        proj, v, b = params
        u = x @ proj.T
        prob = 1.0 / (1.0 + np.exp(-(u @ v.T + b)))
        g = (prob - target) * mask / count
        grad_u = g @ v
        grads = [grad_u.T @ x + l2 * proj, g.T @ u + l2 * v, g.sum(axis=0)]
        for i, (p, grad) in enumerate(zip(params, grads)):
            m1, m2 = moments[i]
            m1 = 0.9 * m1 + 0.1 * grad
            m2 = 0.999 * m2 + 0.001 * grad**2
            moments[i] = (m1, m2)
            p -= lr * (m1 / (1 - 0.9**t)) / (np.sqrt(m2 / (1 - 0.999**t)) + 1e-8)
    return params[0], params[1], params[2]


def predict_mf(params: tuple[np.ndarray, np.ndarray, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Predicted score per model of the matrix-factorisation router."""
    proj, v, b = params
    pred: np.ndarray = 1.0 / (1.0 + np.exp(-((x.astype(np.float32) @ proj.T) @ v.T + b)))
    return pred


def per_task_table(tasks: np.ndarray, scores: np.ndarray, known: np.ndarray) -> dict[str, np.ndarray]:
    """Mean train score of each model per task label (unknown outcomes left out; -1 where none)."""
    table = {}
    for task in np.unique(tasks):
        rows = tasks == task
        k = known[rows]
        mean = np.where(k, np.nan_to_num(scores[rows]), 0).sum(0) / k.sum(0).clip(min=1)
        table[str(task)] = np.where(k.any(0), mean, -1.0)
    return table


def predict_per_task(table: dict[str, np.ndarray], tasks: np.ndarray, default: np.ndarray) -> np.ndarray:
    """(n, M) predicted score: the task's train means; ``default`` (overall means) for unseen tasks."""
    return np.stack([table.get(str(t), default) for t in tasks]) if len(tasks) else np.zeros((0, len(default)))

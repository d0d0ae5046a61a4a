"""Cascades on replay data: try models in turn until the verifier accepts (at most ``turns`` calls).

A cascade's outcome per item is the score of its last answer, the summed cost of its calls and the
number of calls. The verifier is an ``accept`` matrix (see :mod:`podium.learned.simulated_verifier`): the recorded
score for the perfect verifier (an upper bound), or a simulated verifier with false-accept and
false-reject rates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .crossval import Candidate, FoldHeads, first_available
from .head import Head
from .simulated_verifier import Verifier, accept_matrix
from .train import Prepared, Problem, cascade_rollout


@dataclass
class Items:
    """The rows a method is scored on: scores (unknown = 0), known mask, costs, dataset row ids."""

    scores: np.ndarray
    known: np.ndarray
    costs: np.ndarray
    rows: np.ndarray

    def accept(self, verifier: Verifier) -> np.ndarray:
        return accept_matrix(self.scores, verifier, self.rows)

    def pick(self, choice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-item score and cost of one model choice per row."""
        idx = np.arange(len(choice))
        return self.scores[idx, choice], self.costs[idx, choice]


def cascade_order(
    order: np.ndarray, items: Items, turns: int, accept: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-item final score, summed cost and calls of trying models in a fixed ``order``."""
    n = len(items.scores)
    accept = items.scores >= 0.5 if accept is None else accept
    final, spent, calls, done = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n, dtype=bool)
    allowed = items.known & np.isin(np.arange(items.known.shape[1]), order)[None, :]
    tried = np.zeros_like(items.known)
    rows = np.arange(n)
    for _ in range(turns):
        open_ = allowed & ~tried
        choice = first_available(order, open_)
        act = ~done & open_.any(axis=1)
        s, c = items.scores[rows, choice], items.costs[rows, choice]
        final, spent, calls = np.where(act, s, final), spent + act * c, calls + act
        done |= act & accept[rows, choice]
        tried[rows[act], choice[act]] = True
    return final, spent, calls


def head_cascade(
    head: Head,
    emb: np.ndarray,
    items: Items,
    turns: int,
    accept: np.ndarray | None = None,
    self_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-item final score, summed cost and calls of a cascade head."""
    z = head.project(emb, self_rows)
    p = Problem(z, items.scores, items.known, items.costs, accept)
    n_models = head.n_models
    base = (z @ head.weights[: z.shape[1], :n_models])[None]
    final, spent, calls = cascade_rollout(base, head.weights[z.shape[1] :, :n_models][None], p, turns)
    return final[0], spent[0], calls[0]


def two_model_orders(best_order: np.ndarray, models: list[str]) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
    """Fixed cascades that need no training: best then second best, and each other model first, then the best."""
    best = best_order[0]
    out: dict[str, tuple[np.ndarray, dict[str, Any]]] = {
        "best_then_second": (best_order[:2], {"rank_order": "best_then_second"})
    }
    for m in best_order[1:]:
        out[f"{models[int(m)]} then best"] = (np.array([m, best]), {"rank_order": "first_then_best", "first": int(m)})
    return out


def cascade_candidates(
    prep: Prepared,
    fh: FoldHeads,
    verifier: Verifier,
    turns: int,
    lambdas: tuple[float, ...],
    shifts: tuple[float, ...],
    cost_by_model: np.ndarray,
) -> list[Candidate]:
    """Out-of-fold outcomes on train of fixed two-model cascades and fold-trained cascade heads."""
    ds, train = prep.ds, prep.train_rows
    pos = {int(r): i for i, r in enumerate(train)}
    n = len(train)
    buckets: dict[str, tuple[np.ndarray, np.ndarray, dict[str, Any]]] = {}
    filled: dict[str, int] = {}

    def put(name: str, idx: list[int], score: np.ndarray, cost: np.ndarray, params: dict[str, Any]) -> None:
        if name not in buckets:
            buckets[name] = (np.zeros(n), np.zeros(n), params)
        buckets[name][0][idx], buckets[name][1][idx] = score, cost
        filled[name] = filled.get(name, 0) + 1

    for f, (_, held) in enumerate(fh.folds):
        items = Items(np.nan_to_num(ds.scores[held]), ds.known[held], ds.costs[held] / prep.cost_unit, held)
        accept, idx = items.accept(verifier), [pos[int(r)] for r in held]
        order = fh.orders[f]
        for name, (sub, params) in {
            "best_first": (order, {"rank_order": "best_first"}),
            **two_model_orders(order, ds.models),
        }.items():
            sc, co, _ = cascade_order(sub, items, turns if name == "best_first" else 2, accept)
            put(f"fixed {name}", idx, sc, co, {"router": "fixed", **params})
        for lam in lambdas:
            for shift in shifts:
                head = shift_logits(fh.heads[(lam, "cascade")][f], cost_by_model, shift)
                sc, co, _ = head_cascade(head, prep.emb[held], items, turns, accept)
                put(
                    f"learned cascade λ={lam:g} shift={shift:g}",
                    idx,
                    sc,
                    co,
                    {"router": "learned", "lam": lam, "shift": shift},
                )
    # a fixed cascade named by a model index exists in every fold only if no fold's best model is that one
    return [Candidate(name, s, c, params) for name, (s, c, params) in buckets.items() if filled[name] == len(fh.folds)]


def fixed_cascade(params: dict[str, Any], best_order: np.ndarray, turns: int) -> tuple[np.ndarray, int]:
    """Order and call limit of a fixed cascade (``params`` of :func:`cascade_candidates`) for the full
    train ranking; ``first_then_best`` keeps its first model."""
    if params["rank_order"] == "best_first":
        return best_order, turns
    if params["rank_order"] == "best_then_second":
        return best_order[:2], 2
    return np.array([params["first"], best_order[0]]), 2


def shift_logits(head: Head, cost_by_model: np.ndarray, shift: float) -> Head:
    """A copy of ``head`` whose model logits are lowered by ``shift`` × each model's mean cost."""
    if shift == 0:
        return head
    from dataclasses import replace

    weights = head.weights.copy()
    weights[head.k, : head.n_models] -= shift * np.where(np.isfinite(cost_by_model), cost_by_model, 0.0)
    return replace(head, weights=weights)

"""The routers fitted on one replay dataset's train split, and the safe (cross-validated) selections.

:class:`Routers` fits the baselines (kNN, per-model logistic predictor, RouteLLM-style matrix
factorisation, best model per task label), trains learned heads on demand (one per λ, mode and
verifier), and builds the **safe** heads of :mod:`podium.learned.crossval`: heads trained on each of K folds
score every candidate out of fold, and the router deviates from the best single model only where a
Bonferroni-corrected paired bootstrap says it gains.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np

from .baselines import (
    fit_logistic,
    fit_mf,
    knn_from_neighbours,
    knn_neighbours,
    knn_predict,
    per_task_table,
    predict_logistic,
    predict_mf,
    predict_per_task,
)
from .cascades import cascade_candidates, fixed_cascade, shift_logits
from .crossval import (
    ALPHA,
    FOLDS,
    MARGINS,
    FoldHeads,
    Selection,
    fold_fallback,
    fold_heads,
    select_safe,
    single_candidates,
)
from .head import Gate, Head, masked_argmax
from .knob import attach_knob
from .memo import Memo
from .simulated_verifier import PERFECT, Verifier
from .train import Prepared, Progress, TrainConfig, fit_projection, train_head

KNN_KS = (5, 20, 50, 100)
PREDICTIONS = Memo(64 << 20)  # the λ sweep asks the MF and logistic routers about the same test rows again
COST_SLACK = 1e-9  # relative tolerance of the cost cap (uniform costs tie exactly)


def ranking(values: np.ndarray, tiebreak: np.ndarray) -> np.ndarray:
    """Model indices sorted by ``values`` descending, ties by ``tiebreak`` descending."""
    return np.lexsort((-tiebreak, -values))


def train_means(prep: Prepared) -> tuple[np.ndarray, np.ndarray]:
    """Per-model mean train score and mean train cost (known outcomes only)."""
    ds, rows = prep.ds, prep.train_rows
    with np.errstate(invalid="ignore"):
        score = np.nan_to_num(np.nanmean(ds.scores[rows], axis=0), nan=-1.0)
        cost = np.where(ds.known[rows], ds.costs[rows], np.nan)
        cost = np.nan_to_num(np.nanmean(cost, axis=0), nan=np.inf)
    return score, cost


@dataclass
class CascadePlan:
    """What the safe cascade selection chose: the fallback, a fixed order, or a learned cascade head."""

    kind: str  # fallback | fixed | learned
    selection: Selection
    order: np.ndarray | None = None
    turns: int = 1
    head: Head | None = None


class Routers:
    """Everything fitted on one dataset's train split; routers map (encodings, known) to model choices."""

    def __init__(self, prep: Prepared, config: TrainConfig, progress: Progress | None, folds: int = FOLDS) -> None:
        self.prep, self.config, self.progress, self.n_folds = prep, config, progress, folds
        train = prep.train_rows
        self.train_score, self.train_cost = train_means(prep)
        self.best_order = ranking(self.train_score, -self.train_cost)
        self.cheap_order = ranking(-self.train_cost, self.train_score)
        self.cost_by_model = self.train_cost / prep.cost_unit
        self.train_emb = prep.emb[train]
        self.heads: dict[tuple[float, str, Verifier], Head] = {}  # (λ, mode, verifier)
        self.folds: dict[tuple[str, Verifier], FoldHeads] = {}  # (mode, verifier)

    @cached_property
    def knn_k(self) -> int:
        return self._tune_knn()

    @cached_property
    def logistic(self) -> np.ndarray:
        ds, train = self.prep.ds, self.prep.train_rows
        return fit_logistic(self.prep.emb[train], ds.scores[train], ds.known[train], seed=self.config.seed)

    @cached_property
    def mf_basis(self) -> tuple[np.ndarray, np.ndarray]:
        """A 128-d PCA of the encodings, the MF router's input (RouteLLM projects its embedding too)."""
        return fit_projection(self.train_emb, 128, seed=self.config.seed, whiten=False)

    def mf_input(self, emb: np.ndarray) -> np.ndarray:
        mean, basis = self.mf_basis
        projected: np.ndarray = (emb - mean) @ basis
        return projected

    @cached_property
    def mf_params(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ds, train = self.prep.ds, self.prep.train_rows
        return fit_mf(self.mf_input(self.train_emb), ds.scores[train], ds.known[train], seed=self.config.seed)

    def mf_scores(self, emb: np.ndarray) -> np.ndarray:
        """Predicted score per model of the MF router (memoised by content for many rows)."""
        parts = ("mf", emb, *self.mf_basis, *self.mf_params)
        return PREDICTIONS.for_rows(len(emb), lambda: predict_mf(self.mf_params, self.mf_input(emb)), *parts)

    def logistic_scores(self, emb: np.ndarray) -> np.ndarray:
        """Predicted score per model of the logistic predictor (memoised by content for many rows)."""
        return PREDICTIONS.for_rows(
            len(emb), lambda: predict_logistic(self.logistic, emb), "logistic", emb, self.logistic
        )

    @cached_property
    def task_table(self) -> dict[str, np.ndarray]:
        ds, train = self.prep.ds, self.prep.train_rows
        return per_task_table(ds.tasks[train], ds.scores[train], ds.known[train])

    def _tune_knn(self) -> int:
        """The k of :data:`KNN_KS` with the best objective on the held-out slice of train."""
        ds, fit, val = self.prep.ds, self.prep.fit_rows, self.prep.val_rows
        neighbours = knn_neighbours(self.prep.emb[fit], self.prep.emb[val], max(KNN_KS))
        best_k, best = KNN_KS[0], -np.inf
        for k in KNN_KS:
            pred = knn_from_neighbours(neighbours, ds.scores[fit], ds.known[fit], k)
            choice = masked_argmax(pred - self.config.lam * self.cost_by_model, ds.known[val])
            value = np.nan_to_num(ds.scores[val])[np.arange(len(val)), choice].mean()
            if value > best:
                best_k, best = k, value
        return best_k

    def knn(self, emb: np.ndarray, known: np.ndarray, lam: float) -> np.ndarray:
        ds, train = self.prep.ds, self.prep.train_rows
        pred = knn_predict(self.train_emb, ds.scores[train], ds.known[train], emb, self.knn_k)  # search memoised
        return masked_argmax(pred - lam * self.cost_by_model, known)

    def predictor(self, emb: np.ndarray, known: np.ndarray, lam: float) -> np.ndarray:
        return masked_argmax(self.logistic_scores(emb) - lam * self.cost_by_model, known)

    def mf(self, emb: np.ndarray, known: np.ndarray, lam: float) -> np.ndarray:
        return masked_argmax(self.mf_scores(emb) - lam * self.cost_by_model, known)

    def per_task(self, tasks: np.ndarray, known: np.ndarray, lam: float) -> np.ndarray:
        pred = predict_per_task(self.task_table, tasks, self.train_score)
        return masked_argmax(pred - lam * self.cost_by_model, known)

    def cascade_config(self, lam: float, verifier: Verifier) -> TrainConfig:
        return replace(
            self.config, lam=lam, mode="cascade", verifier_fa=verifier.false_accept, verifier_fr=verifier.false_reject
        )

    def head(self, lam: float, mode: str = "single", verifier: Verifier = PERFECT) -> Head:
        """A head trained on all train rows (cascade heads with ``verifier`` in the loop)."""
        key = (lam, mode, verifier)
        if key not in self.heads:
            config = (
                replace(self.config, lam=lam, mode=mode) if mode == "single" else self.cascade_config(lam, verifier)
            )
            self.heads[key] = train_head(self.prep, config, progress=self.progress, every=40)
        return self.heads[key]

    def fold_heads(self, lambdas: tuple[float, ...], mode: str = "single", verifier: Verifier = PERFECT) -> FoldHeads:
        """Heads trained on each CV fold (cached per mode and verifier, extended per λ)."""
        key = (mode, verifier)
        config = self.config if mode == "single" else self.cascade_config(0.0, verifier)
        into = self.folds.get(key)
        if into is None and self.folds:  # same folds, fallbacks and fold training sets for every mode
            first = next(iter(self.folds.values()))
            into = FoldHeads(first.folds, first.orders, first.preps)
        self.folds[key] = fold_heads(self.prep, config, lambdas, mode, self.n_folds, self.progress, into)
        return self.folds[key]

    def safe_head(
        self,
        lambdas: tuple[float, ...] = (0.0,),
        shifts: tuple[float, ...] = (0.0,),
        margins: tuple[float, ...] = MARGINS,
        cap: bool = False,
        objective_lam: float = 0.0,
    ) -> Head:
        """The CV-selected gated head (see :mod:`podium.learned.crossval`); ``cap``: CV cost ≤ the fallback's;
        candidates are compared on CV score − ``objective_lam`` × cost."""
        fh = self.fold_heads(lambdas)
        fallback = fold_fallback(self.prep, fh)
        candidates = single_candidates(self.prep, fh, lambdas, shifts, margins)
        cost_cap = fallback.costs.mean() * (1 + COST_SLACK) if cap else None
        sel = select_safe(candidates, fallback, lam=objective_lam, cost_cap=cost_cap, seed=self.config.seed)
        params = sel.chosen.params if sel.deviates else {"lam": lambdas[0], "shift": 0.0, "margin": np.inf}
        head = shift_logits(self.head(params["lam"]), self.cost_by_model, params["shift"])
        head = replace(
            head,
            gate=Gate(self.best_order, params["margin"], {"selection": _jsonable(sel.summary())}),
            meta={**head.meta, "cv": {"folds": self.n_folds, "alpha": ALPHA, "selection": _jsonable(sel.summary())}},
        )
        return attach_knob(head, self.prep, self.cost_by_model)

    def safe_cascade(
        self, verifier: Verifier, turns: int, lambdas: tuple[float, ...], shifts: tuple[float, ...]
    ) -> CascadePlan:
        """The CV-selected cascade whose CV cost is at most the best single model's, if it gains; else the fallback."""
        fh = self.fold_heads(lambdas, "cascade", verifier)
        fallback = fold_fallback(self.prep, fh)
        candidates = cascade_candidates(self.prep, fh, verifier, turns, lambdas, shifts, self.cost_by_model)
        sel = select_safe(
            candidates, fallback, cost_cap=fallback.costs.mean() * (1 + COST_SLACK), seed=self.config.seed
        )
        if not sel.deviates:
            return CascadePlan("fallback", sel, self.best_order, 1)
        p = sel.chosen.params
        if p["router"] == "fixed":
            order, limit = fixed_cascade(p, self.best_order, turns)
            return CascadePlan("fixed", sel, order, limit)
        head = shift_logits(self.head(p["lam"], "cascade", verifier), self.cost_by_model, p["shift"])
        return CascadePlan("learned", sel, turns=turns, head=head)


def selection_of(head: Head) -> dict[str, Any]:
    """The cross-validation record of a safe head (one made by :meth:`Routers.safe_head`)."""
    if head.gate is None:
        raise ValueError("not a safe head: it has no gate")
    selection: dict[str, Any] = head.gate.info["selection"]
    return selection


def _jsonable(value: Any) -> Any:
    """``inf`` and numpy scalars made JSON-safe (inf becomes None)."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value

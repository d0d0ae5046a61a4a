"""Safe model selection: K-fold cross-validation on train, a paired bootstrap, and a fallback.

A router is only worth deploying where it beats the best single model. Every candidate (a head at
some λ, with its logits shifted by some cost weight, gated by some margin) is scored out of fold on
the train split: each of K folds is routed by a head trained on the other K − 1. The candidate
with the best cross-validated objective is kept only if a one-sided paired bootstrap over train
items says its gain over the **fallback** (the best single model of each fold) is positive at
level ``alpha / number of candidates`` (Bonferroni: the selection looked at every candidate, so one
lucky candidate out of many must not pass). Otherwise the router *is* the fallback.

The **gate** is the shrinkage towards the fallback: a gated head answers with the fallback model
unless its best model's logit beats the fallback's by at least ``margin`` (``inf``: never).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .head import Head, masked_argmax
from .stats import lower_bound
from .train import Prepared, Progress, TrainConfig, train_head

FOLDS = 5
ALPHA = 0.05
MARGINS = (0.0, 0.02, 0.05, 0.1, 0.2)  # gate margins tried (logit units ≈ score units)


@dataclass
class Candidate:
    """Per-item out-of-fold outcomes of one candidate router on the train rows."""

    name: str
    scores: np.ndarray  # (n,)
    costs: np.ndarray  # (n,) in mean-call units
    params: dict[str, Any] = field(default_factory=dict)

    def objective(self, lam: float) -> np.ndarray:
        return self.scores - lam * self.costs


@dataclass
class Selection:
    """The outcome of :func:`select_safe`."""

    chosen: Candidate
    deviates: bool  # False: the fallback was kept
    gain: float  # CV objective gain of the best candidate over the fallback
    lower: float  # its one-sided bootstrap lower bound (Bonferroni-corrected)
    n_candidates: int
    reason: str

    def summary(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen.name,
            "params": self.chosen.params,
            "deviates": self.deviates,
            "cv_gain": self.gain,
            "cv_gain_lower": self.lower,
            "candidates": self.n_candidates,
            "reason": self.reason,
        }


def select_safe(
    candidates: list[Candidate],
    fallback: Candidate,
    *,
    lam: float = 0.0,
    cost_cap: float | None = None,
    alpha: float = ALPHA,
    seed: int = 0,
) -> Selection:
    """The best candidate by CV objective (within ``cost_cap`` mean cost, if given), if its gain over
    ``fallback`` survives a Bonferroni-corrected one-sided paired bootstrap; else ``fallback``."""
    pool = [c for c in candidates if cost_cap is None or c.costs.mean() <= cost_cap]
    if not pool:
        return Selection(fallback, False, 0.0, 0.0, len(candidates), "no candidate within the cost cap")
    base = fallback.objective(lam)
    best = max(pool, key=lambda c: float(c.objective(lam).mean()))
    diff = best.objective(lam) - base
    gain = float(diff.mean())
    lower = lower_bound(diff, alpha / max(len(candidates), 1), seed=seed)
    if lower > 0:
        return Selection(
            best, True, gain, lower, len(candidates), f"CV gain {gain:+.4f} (lower bound {lower:+.4f}) > 0"
        )
    return Selection(
        fallback,
        False,
        gain,
        lower,
        len(candidates),
        f"best candidate {best.name}: CV gain {gain:+.4f}, lower bound {lower:+.4f} ≤ 0: fallback kept",
    )


def kfold(rows: np.ndarray, k: int = FOLDS, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(in-fold rows, held-out rows) for each of ``k`` seeded folds of ``rows``."""
    perm = np.random.default_rng(seed + 7).permutation(rows)
    parts = np.array_split(perm, k)
    return [(np.sort(np.concatenate(parts[:i] + parts[i + 1 :])), np.sort(parts[i])) for i in range(k)]


def sub_prepared(prep: Prepared, rows: np.ndarray, config: TrainConfig) -> Prepared:
    """A :class:`Prepared` whose train split is ``rows`` (fit / validation split inside it, seeded)."""
    perm = np.random.default_rng(config.seed).permutation(rows)
    n_val = max(1, int(round(len(perm) * config.val_frac)))
    return Prepared(prep.ds, prep.emb, np.sort(rows), np.sort(perm[n_val:]), np.sort(perm[:n_val]), prep.cost_unit)


def fallback_order(prep: Prepared, rows: np.ndarray) -> np.ndarray:
    """Models by mean score on ``rows`` (known outcomes only), ties to the cheaper: the fallback ranking."""
    ds = prep.ds
    known = ds.known[rows]
    score = np.where(known, np.nan_to_num(ds.scores[rows]), 0).sum(0) / known.sum(0).clip(min=1)
    score = np.where(known.any(0), score, -1.0)
    cost = np.where(known, ds.costs[rows], 0).sum(0) / known.sum(0).clip(min=1)
    return np.lexsort((cost, -score))


def first_available(order: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Per row, the first model in ``order`` whose outcome is known."""
    first: np.ndarray = order[np.argmax(known[:, order], axis=1)]
    return first


def gated_choice(logits: np.ndarray, known: np.ndarray, order: np.ndarray, margin: float) -> np.ndarray:
    """The head's choice where its best logit beats the fallback's by ``margin``; else the fallback."""
    fb = first_available(order, known)
    pick = masked_argmax(logits, known)
    rows = np.arange(len(pick))
    if not np.isfinite(margin):
        return fb
    beat = logits[rows, pick] - logits[rows, fb] >= max(margin, 1e-12)
    return np.where(beat, pick, fb)


@dataclass
class FoldHeads:
    """Heads trained on each fold's in-rows, and their logits on its held-out rows (train-row order)."""

    folds: list[tuple[np.ndarray, np.ndarray]]
    orders: list[np.ndarray]  # fallback ranking of each fold
    preps: list[Prepared]  # each fold's in-rows as a training set (kNN memory and features cached there)
    logits: dict[tuple[float, str], np.ndarray] = field(
        default_factory=dict
    )  # (λ, mode) -> (n_train, M) held-out logits (single mode)
    heads: dict[tuple[float, str], list[Head]] = field(default_factory=dict)  # (λ, mode) -> [Head per fold]


def fold_heads(
    prep: Prepared,
    config: TrainConfig,
    lambdas: tuple[float, ...],
    mode: str = "single",
    k: int = FOLDS,
    progress: Progress | None = None,
    into: FoldHeads | None = None,
) -> FoldHeads:
    """Train one head per (fold, λ) on the fold's in-rows; keep single-mode logits of the held-out rows."""
    if into is None:
        folds = kfold(prep.train_rows, k, config.seed)
        into = FoldHeads(
            folds,
            [fallback_order(prep, rows_in) for rows_in, _ in folds],
            [sub_prepared(prep, rows_in, config) for rows_in, _ in folds],
        )
    fh = into
    pos = {int(r): i for i, r in enumerate(prep.train_rows)}
    for lam in lambdas:
        if (lam, mode) in fh.heads:
            continue
        cfg = replace(config, lam=lam, mode=mode)
        heads, out = [], np.zeros((len(prep.train_rows), len(prep.ds.models)))
        for f, (rows_in, held) in enumerate(fh.folds):
            if progress:
                progress(f"[{prep.ds.name}] CV {mode} λ={lam:g}: fold {f + 1}/{len(fh.folds)}")
            head = train_head(fh.preps[f], cfg, progress=None)
            heads.append(head)
            if mode == "single":
                out[[pos[int(r)] for r in held]] = head.logits(prep.emb[held])[:, : head.n_models]
        fh.heads[(lam, mode)] = heads
        if mode == "single":
            fh.logits[(lam, mode)] = out
    return fh


def fold_fallback(prep: Prepared, fh: FoldHeads) -> Candidate:
    """Per-item outcomes of each fold's best single model on its held-out rows."""
    ds, n = prep.ds, len(prep.train_rows)
    pos = {int(r): i for i, r in enumerate(prep.train_rows)}
    scores, costs = np.zeros(n), np.zeros(n)
    for (_, held), order in zip(fh.folds, fh.orders):
        choice = first_available(order, ds.known[held])
        idx = [pos[int(r)] for r in held]
        scores[idx] = np.nan_to_num(ds.scores[held])[np.arange(len(held)), choice]
        costs[idx] = ds.costs[held][np.arange(len(held)), choice] / prep.cost_unit
    return Candidate("fallback", scores, costs, {"router": "best_single"})


def single_candidates(
    prep: Prepared,
    fh: FoldHeads,
    lambdas: tuple[float, ...],
    shifts: tuple[float, ...],
    margins: tuple[float, ...] = MARGINS,
) -> list[Candidate]:
    """Every (λ, cost shift, gate margin) of the single-mode fold heads, scored out of fold."""
    ds = prep.ds
    train = prep.train_rows
    known, scores = ds.known[train], np.nan_to_num(ds.scores[train])
    costs = ds.costs[train] / prep.cost_unit
    pos = {int(r): i for i, r in enumerate(train)}
    fold_of = np.zeros(len(train), dtype=np.int64)
    for f, (_, held) in enumerate(fh.folds):
        fold_of[[pos[int(r)] for r in held]] = f
    mean_cost = np.where(known, costs, 0).sum(0) / known.sum(0).clip(min=1)
    rows = np.arange(len(train))
    out = []
    for lam in lambdas:
        base = fh.logits[(lam, "single")]
        for shift in shifts:
            logits = base - shift * mean_cost
            for margin in margins:
                choice = np.zeros(len(train), dtype=np.int64)
                for f, order in enumerate(fh.orders):
                    sel = fold_of == f
                    choice[sel] = gated_choice(logits[sel], known[sel], order, margin)
                out.append(
                    Candidate(
                        f"learned λ={lam:g} shift={shift:g} margin={margin:g}",
                        scores[rows, choice],
                        costs[rows, choice],
                        {"lam": lam, "shift": shift, "margin": margin},
                    )
                )
    return out

"""RouteLLM's metrics on a strong/weak two-model slice of a replay dataset.

RouteLLM (Ong et al. 2024) routes each query to a strong or a weak model and reports, as the
router's threshold moves: the quality curve against the share of calls sent to the strong model;
**PGR** (performance gap recovered, ``(score − weak) / (strong − weak)``); **APGR**, the area under
the PGR curve over the share of strong calls (0.5 for a random router); and **CPT(x%)**, the least
share of strong calls that recovers x% of the gap.

The slice: the strong model is the best single model on train; the weak one is the cheapest other
model by mean train cost (ties: the weaker), the items are those where both outcomes are known, and
every router is refitted on the slice's train split. A router's strong-call share is swept by
sending the queries with the largest predicted advantage of the strong model to it. The learned
head is also driven through its per-request cost knob (``cost_weight`` 0 → 1), which must move
the strong-call share gradually.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from .replay import ReplayDataset
from .routers import Routers, ranking, selection_of, train_means
from .train import Prepared, TrainConfig, prepare

SHARES = np.linspace(0.0, 1.0, 51)
KNOB = tuple(float(w) for w in np.round(np.linspace(0.0, 1.0, 21), 2))


def pick_pair(prep: Prepared) -> tuple[int, int]:
    """(strong, weak) model indices: the best by train score, and the cheapest other one."""
    score, cost = train_means(prep)
    strong = int(ranking(score, -cost)[0])
    others = [m for m in ranking(-cost, -score) if m != strong and np.isfinite(cost[m]) and score[m] >= 0]
    return strong, int(others[0])


def pair_dataset(ds: ReplayDataset, strong: int, weak: int) -> tuple[ReplayDataset, np.ndarray]:
    """The two-model slice (rows where both outcomes are known) and its row numbers in ``ds``."""
    rows = np.flatnonzero(ds.known[:, strong] & ds.known[:, weak])
    cols = [strong, weak]
    sub = replace(
        ds,
        name=f"{ds.name}[{ds.models[strong]} vs {ds.models[weak]}]",
        item_ids=ds.item_ids[rows],
        tasks=ds.tasks[rows],
        splits=ds.splits[rows],
        texts=[ds.texts[i] for i in rows],
        models=[ds.models[c] for c in cols],
        scores=ds.scores[np.ix_(rows, np.array(cols))],
        costs=ds.costs[np.ix_(rows, np.array(cols))],
    )
    return sub, rows


def pgr_curve(advantage: np.ndarray, strong: np.ndarray, weak: np.ndarray) -> dict[str, Any]:
    """Quality and PGR when the top share of queries by ``advantage`` go to the strong model."""
    order = np.argsort(-advantage, kind="stable")
    n = len(order)
    gain = np.concatenate([[0.0], np.cumsum((strong - weak)[order])])
    scores = np.array([(weak.sum() + gain[int(round(q * n))]) / n for q in SHARES])
    gap = strong.mean() - weak.mean()
    pgr = (scores - weak.mean()) / gap if gap > 0 else np.zeros_like(scores)
    return {
        "share": SHARES.tolist(),
        "score": scores.tolist(),
        "pgr": pgr.tolist(),
        "apgr": float(_trapezoid(pgr, SHARES)),
        "cpt50": cpt(pgr, 0.5),
        "cpt80": cpt(pgr, 0.8),
    }


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2)


def cpt(pgr: np.ndarray, level: float) -> float | None:
    """Least share of strong calls whose PGR reaches ``level`` (None if never)."""
    hit = np.flatnonzero(pgr >= level - 1e-12)
    return float(SHARES[hit[0]]) if len(hit) else None


def routellm_metrics(ds: ReplayDataset, prep: Prepared, config: TrainConfig, folds: int) -> dict[str, Any]:
    """RouteLLM's metrics of the learned head, MF, kNN and random routers on the strong/weak slice."""
    strong, weak = pick_pair(prep)
    sub, rows = pair_dataset(ds, strong, weak)
    sub_prep = prepare(sub, config, emb=prep.emb[rows])
    r = Routers(sub_prep, config, None, folds)
    test = sub.indices("test")
    emb, s = sub_prep.emb[test], np.nan_to_num(sub.scores[test])
    head = r.safe_head()
    logits = r.head(0.0).logits(emb)[:, :2]
    mf = r.mf_scores(emb)
    from .baselines import knn_predict

    knn = knn_predict(r.train_emb, sub.scores[sub_prep.train_rows], sub.known[sub_prep.train_rows], emb, r.knn_k)
    rng = np.random.default_rng(config.seed)
    curves = {
        name: pgr_curve(adv, s[:, 0], s[:, 1])
        for name, adv in (
            ("learned", logits[:, 0] - logits[:, 1]),
            ("mf", mf[:, 0] - mf[:, 1]),
            ("knn", knn[:, 0] - knn[:, 1]),
            ("random", rng.random(len(test))),
        )
    }
    knob = []
    for w in KNOB:
        choice = head.choose(emb, sub.known[test], cost_weight=w)
        knob.append(
            {
                "cost_weight": w,
                "strong_share": float((choice == 0).mean()),
                "score": float(s[np.arange(len(test)), choice].mean()),
                "cost": float(sub.costs[test][np.arange(len(test)), choice].mean()),
            }
        )
    return {
        "strong": ds.models[strong],
        "weak": ds.models[weak],
        "test_items": len(test),
        "strong_score": float(s[:, 0].mean()),
        "weak_score": float(s[:, 1].mean()),
        "cost_ratio": float(sub.costs[test][:, 0].mean() / max(sub.costs[test][:, 1].mean(), 1e-12)),
        "curves": curves,
        "knob": knob,
        "cv": selection_of(head),
    }

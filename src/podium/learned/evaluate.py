"""Evaluate the learned coordinator against standard routers and cascades on replay data.

Every method is fitted on the ``train`` split only (model and hyperparameter selection by K-fold
cross-validation inside it, see :mod:`podium.learned.crossval`) and scored once on ``test``. Every row
reports its test score with a 95% bootstrap interval over test items, the paired interval of its
difference to the best single model, the share of the best-single→oracle gap it closes, its mean
cost per item, calls per item and decision latency.

Single-turn rows: random (expected value), best single (chosen on train), cheapest, oracle (upper
bound), best model per task label, RouteLLM-style matrix factorisation (``mf``), kNN, a per-model
logistic predictor, the learned head as trained (``learned_ungated``), the **safe** learned head
(``learned``: CV-gated, falls back to the best single model unless the gain survives a paired
bootstrap) and its cost-capped version (``learned@cap``: CV cost at most the best single's).

Cascade rows use a simulated verifier (:data:`podium.learned.simulated_verifier.REALISTIC` unless told otherwise);
rows marked ``[perfect]`` use the recorded score, an upper bound no live verifier reaches.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .cascades import Items, cascade_order, head_cascade
from .crossval import FOLDS, first_available
from .encoders import get_encoder
from .head import Head, masked_argmax
from .replay import ReplayDataset
from .routers import Routers, selection_of
from .simulated_verifier import PERFECT, REALISTIC, Verifier
from .stats import interval, paired_interval
from .train import Progress, TrainConfig, prepare, stderr_progress

LAMBDAS = (0.0, 0.3, 1.0, 3.0)  # λ sweep of the plot and the cost knob
CAP_LAMBDAS = (0.0, 1.0)  # λ of the heads the cost-capped selection shifts
CAP_SHIFTS = (0.0, 0.03, 0.1, 0.3, 1.0)  # extra λ a capped head may add to its logits (no retraining)
CASCADE_LAMBDAS = (0.3,)  # λ of the cascade heads the capped selection cross-validates (shifted, no retraining)
CASCADE_SHIFTS = (0.0, 0.3, 1.0, 3.0)
VERIFIER_ERRORS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)  # symmetric error rates of the gain-vs-verifier sweep


@dataclass
class MethodResult:
    """One row of the table (``*_ci``: 95% bootstrap intervals over test items)."""

    method: str
    score: float
    cost: float
    gap_closed: float
    calls: float
    latency_ms: float | None = None
    lam: float | None = None
    shift: float | None = None
    score_ci: tuple[float, float] | None = None
    delta_ci: tuple[float, float] | None = None  # paired: score − best single's score
    gap_ci: tuple[float, float] | None = None
    note: str = ""


def make_items(ds: ReplayDataset, rows: np.ndarray) -> Items:
    return Items(np.nan_to_num(ds.scores[rows]), ds.known[rows], ds.costs[rows], rows)


def gap_closed(score: float, best: float, oracle: float) -> float:
    """Share of the best-single→oracle gap that ``score`` closes."""
    return (score - best) / (oracle - best) if oracle > best else 0.0


class Table:
    """Rows of one split, with intervals relative to the best single model's per-item scores."""

    def __init__(self, best: np.ndarray, oracle: float, seed: int) -> None:
        self.best, self.oracle, self.seed = best, oracle, seed
        self.rows: list[MethodResult] = []

    def add(
        self, method: str, scores: np.ndarray, costs: np.ndarray, calls: float | np.ndarray = 1.0, **extra: Any
    ) -> MethodResult:
        best_mean = float(self.best.mean())
        delta = paired_interval(scores, self.best, seed=self.seed)
        span = self.oracle - best_mean
        gap_ci = (delta[0] / span, delta[1] / span) if span > 0 else (0.0, 0.0)
        row = MethodResult(
            method,
            float(np.mean(scores)),
            float(np.mean(costs)),
            gap_closed(float(np.mean(scores)), best_mean, self.oracle),
            float(np.mean(calls)),
            score_ci=interval(scores, seed=self.seed),
            delta_ci=delta,
            gap_ci=gap_ci,
            **extra,
        )
        self.rows.append(row)
        return row


def single_turn_table(r: Routers, rows: np.ndarray, lam: float, safe: dict[str, Head]) -> Table:
    """Every single-turn method on ``rows`` of the dataset."""
    ds, emb = r.prep.ds, r.prep.emb[rows]
    items = make_items(ds, rows)
    known = items.known
    oracle_choice = masked_argmax(items.scores * 1e6 - items.costs / (items.costs.max() + 1e-12), known)
    best = items.pick(first_available(r.best_order, known))
    table = Table(best[0], float(items.pick(oracle_choice)[0].mean()), r.config.seed)
    share = known / known.sum(axis=1, keepdims=True).clip(min=1)  # random: expectation, uniform over known
    table.add("random", (items.scores * share).sum(1), (items.costs * share).sum(1))
    table.add("best_single", *best)
    table.add("cheapest", *items.pick(first_available(r.cheap_order, known)))
    table.add("oracle", *items.pick(oracle_choice))
    table.add("per_task", *items.pick(r.per_task(ds.tasks[rows], known, lam)), lam=lam)
    table.add("mf", *items.pick(r.mf(emb, known, lam)), lam=lam)
    table.add("knn", *items.pick(r.knn(emb, known, lam)), lam=lam)
    table.add("predictor", *items.pick(r.predictor(emb, known, lam)), lam=lam)
    table.add("learned_ungated", *items.pick(r.head(lam).choose(emb, known)), lam=lam)
    for name, head in safe.items():
        sel = selection_of(head)
        table.add(
            name,
            *items.pick(head.choose(emb, known)),
            lam=sel["params"].get("lam"),
            shift=sel["params"].get("shift"),
            note=f"deviates, margin {sel['params'].get('margin')}" if sel["deviates"] else "fallback kept",
        )
    return table


def cascade_rows(r: Routers, rows: np.ndarray, table: Table, turns: int, verifier: Verifier) -> dict[str, Any]:
    """Cascades under ``verifier`` (headline) and the perfect verifier (upper bound); returns the safe plan's record."""
    emb, items = r.prep.emb[rows], make_items(r.prep.ds, rows)
    for v in dict.fromkeys((verifier, PERFECT)):
        tag = " [perfect]" if v.perfect else ""
        accept = items.accept(v)
        sc, co, ca = cascade_order(r.best_order[:2], items, 2, accept)
        table.add(f"cascade_best_then_second@2{tag}", sc, co, ca)
        sc, co, ca = cascade_order(r.best_order, items, turns, accept)
        table.add(f"cascade_best_first@{turns}{tag}", sc, co, ca)
        sc, co, ca = head_cascade(r.head(0.0, "cascade", v), emb, items, turns, accept)
        table.add(f"learned_cascade@{turns}{tag}", sc, co, ca, lam=0.0)
    plan = r.safe_cascade(verifier, turns, CASCADE_LAMBDAS, CASCADE_SHIFTS)
    accept = items.accept(verifier)
    if plan.kind == "learned":
        assert plan.head is not None  # a learned plan carries its head
        sc, co, ca = head_cascade(plan.head, emb, items, plan.turns, accept)
    else:
        assert plan.order is not None  # fallback and fixed plans carry their order
        sc, co, ca = cascade_order(plan.order, items, plan.turns, accept)
    table.add(f"learned_cascade@{turns} cap", sc, co, ca, note=f"CV chose {plan.selection.chosen.name}")
    return {"kind": plan.kind, **plan.selection.summary()}


def verifier_sweep(r: Routers, rows: np.ndarray, turns: int, verifier: Verifier) -> list[dict[str, Any]]:
    """Gain over the best single model of the cascades as the verifier's symmetric error rate grows."""
    items, emb = make_items(r.prep.ds, rows), r.prep.emb[rows]
    best = items.pick(first_available(r.best_order, items.known))[0]
    head = r.head(0.0, "cascade", verifier)
    out = []
    for err in VERIFIER_ERRORS:
        accept = items.accept(Verifier(err, err, verifier.seed))
        for name, (sc, _, _) in (
            ("cascade_best_then_second@2", cascade_order(r.best_order[:2], items, 2, accept)),
            (f"cascade_best_first@{turns}", cascade_order(r.best_order, items, turns, accept)),
            (f"learned_cascade@{turns}", head_cascade(head, emb, items, turns, accept)),
        ):
            lo, hi = paired_interval(sc, best, seed=r.config.seed)
            out.append(
                {
                    "method": name,
                    "error_rate": err,
                    "accuracy": 1 - err,
                    "gain": float(sc.mean() - best.mean()),
                    "gain_ci": [lo, hi],
                }
            )
    return out


def decision_latency_ms(decide: Callable[[str], object], texts: list[str], repeats: int = 1) -> float:
    """Median milliseconds for ``decide(text)`` over ``texts`` (one decision at a time)."""
    times: list[float] = []
    for _ in range(repeats):
        for text in texts:
            t = time.perf_counter()
            decide(text)
            times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def measure_latency(r: Routers, texts: list[str], lam: float, safe_head: Head) -> dict[str, float]:
    """Median decision latency (encoder included) of the methods that look at the text."""
    encoder = get_encoder(r.config.encoder)
    everyone = np.ones((1, len(r.prep.ds.models)), dtype=bool)
    return {
        "learned": decision_latency_ms(lambda t: safe_head.choose(encoder.encode([t]), everyone), texts),
        "knn": decision_latency_ms(lambda t: r.knn(encoder.encode([t]), everyone, lam), texts),
        "predictor": decision_latency_ms(lambda t: r.predictor(encoder.encode([t]), everyone, lam), texts),
        "mf": decision_latency_ms(lambda t: r.mf(encoder.encode([t]), everyone, lam), texts),
    }


def lambda_sweep(
    r: Routers, rows: np.ndarray, lambdas: tuple[float, ...], best: float, oracle: float
) -> list[dict[str, Any]]:
    """Learned head, kNN, predictor and MF at each λ: the cost–quality curves of the plot."""
    items, emb = make_items(r.prep.ds, rows), r.prep.emb[rows]
    points = []
    for lam in lambdas:
        for name, choice in (
            ("learned", r.head(lam).choose(emb, items.known)),
            ("knn", r.knn(emb, items.known, lam)),
            ("predictor", r.predictor(emb, items.known, lam)),
            ("mf", r.mf(emb, items.known, lam)),
        ):
            score, cost = (float(a.mean()) for a in items.pick(choice))
            points.append(
                {
                    "method": name,
                    "lambda": lam,
                    "score": score,
                    "cost": cost,
                    "gap_closed": gap_closed(score, best, oracle),
                }
            )
    return points


def evaluate_dataset(
    ds: ReplayDataset,
    config: TrainConfig | None = None,
    *,
    lambdas: tuple[float, ...] = LAMBDAS,
    cascade_turns: int = 3,
    verifier: Verifier = REALISTIC,
    progress: Progress | None = stderr_progress,
    cache_root: Path | None = None,
    extras: bool = True,
    folds: int = FOLDS,
    latency_items: int = 200,
) -> dict[str, Any]:
    """Every method on one dataset's test split (and its ``eval_only`` split, single-turn, if any).

    Decision latency is timed on the first ``latency_items`` test texts (fewer for slow encoders)."""
    config = config or TrainConfig()
    started = time.perf_counter()
    test = ds.indices("test")
    if len(test) == 0:
        from ..errors import UsageError

        raise UsageError(f"dataset {ds.name}: no items with split 'test' to evaluate on")
    if progress:
        progress(f"[{ds.name}] encoding {len(ds.texts)} texts")
    prep = prepare(ds, config, cache_root=cache_root, progress=progress)
    r = Routers(prep, config, progress, folds)
    safe = {"learned": r.safe_head(), "learned@cap": r.safe_head(CAP_LAMBDAS, CAP_SHIFTS, cap=True)}
    table = single_turn_table(r, test, config.lam, safe)
    cascade_plan = cascade_rows(r, test, table, cascade_turns, verifier)
    by_name = {m.method: m for m in table.rows}
    best, oracle = by_name["best_single"].score, by_name["oracle"].score
    latency = measure_latency(r, [ds.texts[i] for i in test[:latency_items]], config.lam, safe["learned"])
    for m in table.rows:
        m.latency_ms = latency.get(m.method.split("@")[0])
    out = _summary(ds, test, r, prep, config, verifier, table, safe, cascade_plan)
    if extras:
        out.update(
            _extras(ds, test, r, prep, config, safe, (lambdas, best, oracle), cascade_turns, verifier, folds, progress)
        )
    eval_only = ds.indices("eval_only")
    if len(eval_only):
        out["eval_only"] = [asdict(m) for m in single_turn_table(r, eval_only, config.lam, safe).rows]
    out["seconds"] = round(time.perf_counter() - started, 1)
    out["_routers"] = r  # dropped before writing JSON; lets callers add measurements without refitting
    return out


def _summary(
    ds: ReplayDataset,
    test: Any,
    r: Routers,
    prep: Any,
    config: TrainConfig,
    verifier: Verifier,
    table: Any,
    safe: dict[str, Any],
    cascade_plan: Any,
) -> dict[str, Any]:
    """The dataset's results: the methods' table, each single model's score and cost, the CV choices."""
    items = make_items(ds, test)
    singles = [
        {
            "model": name,
            "score": float(items.scores[items.known[:, j], j].mean()) if items.known[:, j].any() else None,
            "cost": float(items.costs[items.known[:, j], j].mean()) if items.known[:, j].any() else None,
        }
        for j, name in enumerate(ds.models)
    ]
    return {
        "dataset": ds.describe(),
        "test_items": len(test),
        "knn_k": r.knn_k,
        "headline_lambda": config.lam,
        "verifier": {
            "false_accept": verifier.false_accept,
            "false_reject": verifier.false_reject,
            "label": verifier.label,
        },
        "methods": [asdict(m) for m in table.rows],
        "singles": singles,
        "best_single_model": ds.models[r.best_order[0]],
        "cost_unit": prep.cost_unit,
        "cv": {name: selection_of(head) for name, head in safe.items()},
        "cascade_cv": cascade_plan,
        "folds": r.n_folds,
    }


def _extras(
    ds: ReplayDataset,
    test: Any,
    r: Routers,
    prep: Any,
    config: TrainConfig,
    safe: dict[str, Any],
    sweep: tuple[tuple[float, ...], float, float],
    cascade_turns: int,
    verifier: Verifier,
    folds: int,
    progress: Progress | None,
) -> dict[str, Any]:
    """The λ and verifier sweeps, the RouteLLM slice and the decision cache (``extras=True``).
    ``sweep``: the λ values, the best single model's score and the oracle's."""
    from .cache_eval import measure_cache
    from .routellm import routellm_metrics

    lambdas, best, oracle = sweep
    out: dict[str, Any] = {}
    out["sweep"] = lambda_sweep(r, test, lambdas, best, oracle)
    out["verifier_sweep"] = verifier_sweep(r, test, cascade_turns, verifier)
    if progress:
        progress(f"[{ds.name}] RouteLLM strong/weak slice, decision cache")
    out["routellm"] = routellm_metrics(ds, prep, config, folds)
    out["cache"] = measure_cache(safe["learned"], get_encoder(config.encoder), ds, test, n=600, seed=config.seed)
    return out

"""Evaluate the learned coordinator against the routers RouterBench and RouteLLM compare, on replay data.

Every method is fitted on the ``train`` split (the learned heads also hold out a slice of it for
model selection) and scored on ``test``. A method picks, per test item, one model among those whose
outcome is known (single-turn), or a sequence of models (cascade, where the recorded score plays
the verifier). Reported per method: test score, mean cost per item (in the dataset's cost units),
share of the best-single→oracle gap closed, calls per item and decision latency.

Baselines: random (expected value), best single (chosen on train), cheapest (mean train cost, ties
to the better model), oracle (upper bound), kNN on the encodings, and a per-model logistic-
regression score predictor. Cascade peer: the fixed best-first order (top models by train score).

Cost-capped rows (``learned@cap``, ``learned_cascade@K cap``): among the heads trained at each λ,
each also with its model logits lowered by ``shift`` × the model's mean cost for each shift of
:data:`CAP_SHIFTS` (still a linear head), the one with the best score on the held-out slice of
train whose cost there is at most the best single model's cost there (else the cheapest); the same
rule on every dataset, test never looked at.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from podium.encoders import get_encoder
from podium.head import Head, masked_argmax
from podium.replay import ReplayDataset
from podium.train import PASS_SCORE, Prepared, Progress, TrainConfig, prepare, stderr_progress, train_head

KNN_KS = (5, 20, 50, 100)
LAMBDAS = (0.0, 0.3, 1.0, 3.0)
CASCADE_LAMBDAS = (0.0, 0.3, 1.0)
COST_SLACK = 1e-9  # relative tolerance of the cost cap (uniform costs tie exactly)
CAP_SHIFTS = (0.0, 0.03, 0.1, 0.3, 1.0)  # extra λ a capped head may add to its logits (no retraining)
HEADLINE_LAMBDA = 0.0


@dataclass
class MethodResult:
    """One row of the table."""

    method: str
    score: float
    cost: float
    gap_closed: float
    calls: float
    latency_ms: float | None = None
    lam: float | None = None
    shift: float | None = None


@dataclass
class Split:
    """Test-side arrays shared by every method."""

    scores: np.ndarray  # (n, M) unknown = 0
    known: np.ndarray
    costs: np.ndarray

    def outcome(self, choice: np.ndarray) -> tuple[float, float]:
        rows = np.arange(len(choice))
        return float(self.scores[rows, choice].mean()), float(self.costs[rows, choice].mean())


def ranking(values: np.ndarray, tiebreak: np.ndarray) -> np.ndarray:
    """Model indices sorted by ``values`` descending, ties by ``tiebreak`` descending."""
    return np.lexsort((-tiebreak, -values))


def first_available(order: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Per row, the first model in ``order`` whose outcome is known (a fixed router with fallback)."""
    ranked = known[:, order]
    return order[np.argmax(ranked, axis=1)]


def train_means(prep: Prepared) -> tuple[np.ndarray, np.ndarray]:
    """Per-model mean train score and mean train cost (known outcomes only)."""
    ds, rows = prep.ds, prep.train_rows
    with np.errstate(invalid="ignore"):
        score = np.nan_to_num(np.nanmean(ds.scores[rows], axis=0), nan=-1.0)
        cost = np.where(ds.known[rows], ds.costs[rows], np.nan)
        cost = np.nan_to_num(np.nanmean(cost, axis=0), nan=np.inf)
    return score, cost


def knn_neighbours(train_emb: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` most similar train rows per query row, most similar first (cosine)."""
    k = min(k, len(train_emb))
    out = np.zeros((len(query), k), dtype=np.int64)
    for start in range(0, len(query), 1024):
        sims = query[start : start + 1024] @ train_emb.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
        out[start : start + 1024] = np.take_along_axis(top, order, axis=1)
    return out


def knn_from_neighbours(neighbours: np.ndarray, train_scores: np.ndarray, train_known: np.ndarray, k: int) -> np.ndarray:
    """Mean score of each model over the first ``k`` neighbours (known outcomes only)."""
    top = neighbours[:, :k]
    filled, weight = np.nan_to_num(train_scores) * train_known, train_known.astype(float)
    num, den = filled[top].sum(axis=1), weight[top].sum(axis=1)
    return np.where(den > 0, num / np.maximum(den, 1e-9), 0.0)


def knn_predict(train_emb: np.ndarray, train_scores: np.ndarray, train_known: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    """Mean score of each model over the ``k`` most similar train items (cosine; known outcomes only)."""
    return knn_from_neighbours(knn_neighbours(train_emb, query, k), train_scores, train_known, k)


def fit_logistic(x: np.ndarray, y: np.ndarray, known: np.ndarray, steps: int = 200, l2: float = 1e-4, lr: float = 0.05, seed: int = 0) -> np.ndarray:
    """Per-model logistic regression (soft labels, masked unknowns) by full-batch Adam; returns (D+1, M)."""
    xb = np.hstack([x, np.ones((len(x), 1), x.dtype)]).astype(np.float32)
    target = np.nan_to_num(y).astype(np.float32)
    mask = known.astype(np.float32)
    w = np.random.default_rng(seed).normal(0, 1e-3, (xb.shape[1], y.shape[1])).astype(np.float32)
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t in range(1, steps + 1):
        prob = 1.0 / (1.0 + np.exp(-(xb @ w)))
        grad = xb.T @ ((prob - target) * mask) / np.maximum(mask.sum(axis=0), 1) + l2 * w
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad**2
        w -= lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    return w


def predict_logistic(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Predicted score per model."""
    return 1.0 / (1.0 + np.exp(-(np.hstack([x, np.ones((len(x), 1), x.dtype)]) @ w)))


def cascade_order(order: np.ndarray, split: Split, turns: int) -> tuple[float, float, float]:
    """Score, cost and calls of trying models in a fixed ``order`` until one passes (at most ``turns``)."""
    n = len(split.scores)
    final, spent, calls, done = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n, dtype=bool)
    tried = np.zeros_like(split.known)
    for _ in range(turns):
        choice = first_available(order, split.known & ~tried)
        act = ~done & (split.known & ~tried).any(axis=1)
        rows = np.arange(n)
        s, c = split.scores[rows, choice], split.costs[rows, choice]
        final, spent, calls = np.where(act, s, final), spent + act * c, calls + act
        done |= act & (s >= PASS_SCORE)
        tried[rows[act], choice[act]] = True
    return float(final.mean()), float(spent.mean()), float(calls.mean())


def head_cascade(head: Head, emb: np.ndarray, split: Split, turns: int, self_rows: np.ndarray | None = None) -> tuple[float, float, float]:
    """Score, cost and calls of a cascade head on the rows of ``split`` (``self_rows``: see :class:`KnnMemory`)."""
    from podium.train import Problem, cascade_rollout

    z = head.project(emb, self_rows)
    p = Problem(z, split.scores, split.known, split.costs)
    n_models = head.n_models
    base = (z @ head.weights[: z.shape[1], :n_models])[None]
    final, spent, calls = cascade_rollout(base, head.weights[z.shape[1] :, :n_models][None], p, turns)
    return float(final.mean()), float(spent.mean()), float(calls.mean())


def decision_latency_ms(decide, texts: list[str], repeats: int = 1) -> float:
    """Median milliseconds for ``decide(text)`` over ``texts`` (one decision at a time)."""
    times = []
    for _ in range(repeats):
        for text in texts:
            t = time.perf_counter()
            decide(text)
            times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


class Routers:
    """The fitted single-turn routers of one dataset; each maps (rows' encodings, known) to choices."""

    def __init__(self, prep: Prepared, config: TrainConfig, progress: Progress | None) -> None:
        self.prep, self.config, self.progress = prep, config, progress
        ds, train = prep.ds, prep.train_rows
        self.train_score, self.train_cost = train_means(prep)
        self.best_order = ranking(self.train_score, -self.train_cost)
        self.cheap_order = ranking(-self.train_cost, self.train_score)
        self.cost_by_model = self.train_cost / prep.cost_unit
        self.knn_k = self._tune_knn()
        self.logistic = fit_logistic(prep.emb[train], ds.scores[train], ds.known[train], seed=config.seed)
        self.heads: dict[tuple[float, str], Head] = {}
        self.train_emb = prep.emb[train]
        self._knn_cache: dict[tuple, np.ndarray] = {}

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
        key = (emb.shape, emb[:4].tobytes(), emb[-4:].tobytes())
        pred = self._knn_cache.get(key) if len(emb) > 1 else None
        if pred is None:
            pred = knn_predict(self.train_emb, ds.scores[train], ds.known[train], emb, self.knn_k)
            if len(emb) > 1:
                self._knn_cache[key] = pred
        return masked_argmax(pred - lam * self.cost_by_model, known)

    def predictor(self, emb: np.ndarray, known: np.ndarray, lam: float) -> np.ndarray:
        return masked_argmax(predict_logistic(self.logistic, emb) - lam * self.cost_by_model, known)

    def head(self, lam: float, mode: str = "single") -> Head:
        key = (lam, mode)
        if key not in self.heads:
            config = replace(self.config, lam=lam, mode=mode)
            self.heads[key] = train_head(self.prep, config, progress=self.progress, every=40)
        return self.heads[key]


def shifted(head: Head, cost_by_model: np.ndarray, shift: float) -> Head:
    """A copy of ``head`` whose model logits are lowered by ``shift`` × each model's mean cost."""
    if shift == 0:
        return head
    weights = head.weights.copy()
    weights[head.k, : head.n_models] -= shift * np.where(np.isfinite(cost_by_model), cost_by_model, 0.0)
    return replace(head, weights=weights)


def validation_outcome(r: Routers, head: Head, mode: str, turns: int) -> tuple[float, float]:
    """Score and cost of ``head`` on the held-out slice of train (leave-one-out kNN features)."""
    prep, val = r.prep, r.prep.val_rows
    split, emb = make_split(prep.ds, val), prep.emb[val]
    if mode == "cascade":
        return head_cascade(head, emb, split, turns, prep.self_rows(val))[:2]
    return split.outcome(head.choose(emb, split.known, self_rows=prep.self_rows(val)))


def capped_head(r: Routers, lambdas: tuple[float, ...], mode: str, turns: int) -> tuple[Head, float, float]:
    """(head, λ, shift): the head (trained at λ, logits lowered by shift × cost) that scores best on the
    held-out slice at no more than the best single model's cost there; else the cheapest there."""
    val = make_split(r.prep.ds, r.prep.val_rows)
    cap = val.outcome(first_available(r.best_order, val.known))[1] * (1 + COST_SLACK)
    candidates = []
    for lam in lambdas:
        for shift in CAP_SHIFTS:
            head = shifted(r.head(lam, mode), r.cost_by_model, shift)
            candidates.append((*validation_outcome(r, head, mode, turns), head, lam, shift))
    within = [c for c in candidates if c[1] <= cap]
    chosen = max(within, key=lambda c: c[0]) if within else min(candidates, key=lambda c: c[1])
    return chosen[2], chosen[3], chosen[4]


def gap_closed(score: float, best: float, oracle: float) -> float:
    """Share of the best-single→oracle gap that ``score`` closes."""
    return (score - best) / (oracle - best) if oracle > best else 0.0


def single_turn_rows(r: Routers, emb: np.ndarray, split: Split, lam: float) -> list[tuple[str, float, float, float | None]]:
    """(method, score, cost, λ) of every single-turn method on one row set."""
    known = split.known
    share = known / known.sum(axis=1, keepdims=True).clip(min=1)  # random: expectation, uniform over known
    out = [("random", float((split.scores * share).sum(1).mean()), float((split.costs * share).sum(1).mean()), None)]
    for name, order in (("best_single", r.best_order), ("cheapest", r.cheap_order)):
        out.append((name, *split.outcome(first_available(order, known)), None))
    oracle_choice = masked_argmax(split.scores * 1e6 - split.costs / (split.costs.max() + 1e-12), known)
    out.append(("oracle", *split.outcome(oracle_choice), None))
    out.append(("knn", *split.outcome(r.knn(emb, known, lam)), lam))
    out.append(("predictor", *split.outcome(r.predictor(emb, known, lam)), lam))
    out.append(("learned", *split.outcome(r.head(lam).choose(emb, known)), lam))
    return out


def make_split(ds: ReplayDataset, rows: np.ndarray) -> Split:
    return Split(np.nan_to_num(ds.scores[rows]), ds.known[rows], ds.costs[rows])


def results_for(rows: list[tuple], best: float, oracle: float, calls: float = 1.0) -> list[MethodResult]:
    return [MethodResult(name, s, c, gap_closed(s, best, oracle), calls, lam=lam) for name, s, c, lam in rows]


def measure_latency(r: Routers, texts: list[str], lam: float) -> dict[str, float]:
    """Median decision latency (encoder included) of the methods that look at the text."""
    encoder = get_encoder(r.config.encoder)
    head = r.head(lam)
    n_models = len(r.prep.ds.models)
    everyone = np.ones((1, n_models), dtype=bool)
    return {
        "learned": decision_latency_ms(lambda t: head.choose(encoder.encode([t]), everyone), texts),
        "knn": decision_latency_ms(lambda t: r.knn(encoder.encode([t]), everyone, lam), texts),
        "predictor": decision_latency_ms(lambda t: r.predictor(encoder.encode([t]), everyone, lam), texts),
    }


def evaluate_dataset(ds: ReplayDataset, config: TrainConfig | None = None, *, lambdas: tuple[float, ...] = LAMBDAS,
                     headline: float = HEADLINE_LAMBDA, cascade_turns: int = 3, progress: Progress | None = stderr_progress,
                     cache_root: Path | None = None) -> dict:
    """Every method on one dataset's test split (and its ``eval_only`` split, single-turn, if any)."""
    config = replace(config or TrainConfig(), lam=headline)
    started = time.perf_counter()
    if progress:
        progress(f"[{ds.name}] encoding {len(ds.texts)} texts")
    prep = prepare(ds, config, cache_root=cache_root)
    r = Routers(prep, config, progress)
    test = ds.indices("test")
    if len(test) == 0:
        from podium.errors import UsageError

        raise UsageError(f"dataset {ds.name}: no items with split 'test' to evaluate on")
    split = make_split(ds, test)
    rows = single_turn_rows(r, prep.emb[test], split, headline)
    by_name = {name: s for name, s, _, _ in rows}
    best, oracle = by_name["best_single"], by_name["oracle"]
    methods = results_for(rows, best, oracle)
    cap_head, cap_lam, cap_shift = capped_head(r, lambdas, "single", cascade_turns)
    cap_score, cap_cost = split.outcome(cap_head.choose(prep.emb[test], split.known))
    methods.append(MethodResult("learned@cap", cap_score, cap_cost, gap_closed(cap_score, best, oracle), 1.0, lam=cap_lam, shift=cap_shift))
    methods += cascade_results(r, prep.emb[test], split, cascade_turns, headline, best, oracle)
    latency = measure_latency(r, [ds.texts[i] for i in test[:200]], headline)
    for m in methods:
        m.latency_ms = latency.get(m.method.split("@")[0].split(":")[0])
    sweep = lambda_sweep(r, prep.emb[test], split, lambdas, best, oracle)
    singles = [{"model": name, "score": float(split.scores[split.known[:, j], j].mean()) if split.known[:, j].any() else None,
                "cost": float(split.costs[split.known[:, j], j].mean()) if split.known[:, j].any() else None}
               for j, name in enumerate(ds.models)]
    out = {"dataset": ds.describe(), "test_items": len(test), "knn_k": r.knn_k, "headline_lambda": headline,
           "methods": [asdict(m) for m in methods], "sweep": sweep, "singles": singles,
           "best_single_model": ds.models[r.best_order[0]], "cost_unit": prep.cost_unit}
    eval_only = ds.indices("eval_only")
    if len(eval_only):
        eo_split = make_split(ds, eval_only)
        eo_rows = single_turn_rows(r, prep.emb[eval_only], eo_split, headline)
        eo = {n: s for n, s, _, _ in eo_rows}
        out["eval_only"] = [asdict(m) for m in results_for(eo_rows, eo["best_single"], eo["oracle"])]
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def cascade_results(r: Routers, emb: np.ndarray, split: Split, turns: int, lam: float, best: float, oracle: float) -> list[MethodResult]:
    """The learned cascade heads (at ``lam`` and each of :data:`CASCADE_LAMBDAS`) against the fixed
    best-first cascade, all with at most ``turns`` calls."""
    fixed = cascade_order(r.best_order, split, turns)
    rows = [MethodResult(f"cascade_best_first@{turns}", fixed[0], fixed[1], gap_closed(fixed[0], best, oracle), fixed[2])]
    for cascade_lam in dict.fromkeys((lam, *CASCADE_LAMBDAS)):
        score, cost, calls = head_cascade(r.head(cascade_lam, "cascade"), emb, split, turns)
        name = f"learned_cascade@{turns}" + (f" λ={cascade_lam:g}" if cascade_lam != lam else "")
        rows.append(MethodResult(name, score, cost, gap_closed(score, best, oracle), calls, lam=cascade_lam))
    cap_head, cap_lam, cap_shift = capped_head(r, CASCADE_LAMBDAS, "cascade", turns)
    score, cost, calls = head_cascade(cap_head, emb, split, turns)
    rows.append(MethodResult(f"learned_cascade@{turns} cap", score, cost, gap_closed(score, best, oracle), calls,
                             lam=cap_lam, shift=cap_shift))
    return rows


def lambda_sweep(r: Routers, emb: np.ndarray, split: Split, lambdas: tuple[float, ...], best: float, oracle: float) -> list[dict]:
    """Learned head, kNN and predictor at each λ: the cost–quality curves of the plot."""
    points = []
    for lam in lambdas:
        for name, choice in (("learned", r.head(lam).choose(emb, split.known)), ("knn", r.knn(emb, split.known, lam)),
                             ("predictor", r.predictor(emb, split.known, lam))):
            score, cost = split.outcome(choice)
            points.append({"method": name, "lambda": lam, "score": score, "cost": cost, "gap_closed": gap_closed(score, best, oracle)})
    return points


def format_table(result: dict) -> str:
    """The per-dataset table printed by ``podium eval replay``."""
    d = result["dataset"]
    head = f"{'method':<24} {'score':>7} {'cost/item':>11} {'gap closed':>10} {'calls':>6} {'latency ms':>10}"
    lines = [f"== {d['name']}: {result['test_items']} test items, {d['models']} models, cost: {d['cost_source']}, "
             f"best single: {result['best_single_model']} ==", head, "-" * len(head)]
    for m in result["methods"]:
        lat = f"{m['latency_ms']:.2f}" if m["latency_ms"] is not None else "-"
        lines.append(f"{m['method']:<24} {m['score']:>7.4f} {m['cost']:>11.3g} {m['gap_closed'] * 100:>9.1f}% {m['calls']:>6.2f} {lat:>10}")
    if "eval_only" in result:
        lines.append("eval_only (out-of-distribution tasks): " + ", ".join(f"{m['method']} {m['score']:.4f}" for m in result["eval_only"]))
    return "\n".join(lines)


def write_json(results: list[dict], path: Path, command: str) -> None:
    """Results plus the command that made them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"command": command, "results": results}, indent=1))


def plot(results: list[dict], path: Path) -> None:
    """Cost–quality plot: one panel per dataset, single models as points, λ sweeps as lines."""
    try:
        import matplotlib
    except ImportError:
        from podium.errors import missing_extra

        raise missing_extra("matplotlib", "train") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4.2), squeeze=False)
    for ax, res in zip(axes[0], results):
        singles = [s for s in res["singles"] if s["score"] is not None]
        ax.scatter([s["cost"] for s in singles], [s["score"] for s in singles], c="0.6", s=14, label="single models")
        for name, style in (("learned", "o-"), ("knn", "s--"), ("predictor", "^:")):
            pts = sorted((p for p in res["sweep"] if p["method"] == name), key=lambda p: p["lambda"])
            ax.plot([p["cost"] for p in pts], [p["score"] for p in pts], style, label=f"{name} (λ sweep)", ms=4)
        methods = {m["method"]: m for m in res["methods"]}
        for name, marker in (("oracle", "*"), ("best_single", "D")):
            ax.scatter([methods[name]["cost"]], [methods[name]["score"]], marker=marker, s=70, label=name, zorder=3)
        for m in res["methods"]:
            if "cascade" in m["method"]:
                ax.scatter([m["cost"]], [m["score"]], marker="P", s=50, label=m["method"], zorder=3)
        ax.set_title(res["dataset"]["name"])
        ax.set_xlabel(f"mean cost per item ({res['dataset']['cost_source']})")
        ax.set_ylabel("test score")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)

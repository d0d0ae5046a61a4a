"""What ``podium eval replay`` prints and writes: the per-dataset table, the JSON results and the
cost–quality plot (of :func:`podium.learned.evaluate.evaluate_dataset`'s results)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def _ci(pair: tuple[float, float] | list[float] | None) -> str:
    return f"[{pair[0]:.3f}, {pair[1]:.3f}]" if pair else ""


def _pct(value: float | None) -> str:
    return "never" if value is None else f"{value:.0%}"


def format_table(result: dict[str, Any]) -> str:
    """The per-dataset table printed by ``podium eval replay``."""
    d = result["dataset"]
    head = f"{'method':<34} {'score':>7} {'95% CI':>16} {'Δ vs best 95% CI':>18} {'gap closed':>10} {'cost/item':>10} {'calls':>5} {'ms':>6}"
    lines = [
        f"== {d['name']}: {result['test_items']} test items, {d['models']} models, cost: {d['cost_source']}, "
        f"best single: {result['best_single_model']}; cascades: {result['verifier']['label']} ==",
        head,
        "-" * len(head),
    ]
    for m in result["methods"]:
        lat = f"{m['latency_ms']:.2f}" if m["latency_ms"] is not None else "-"
        lines.append(
            f"{m['method']:<34} {m['score']:>7.4f} {_ci(m['score_ci']):>16} {_ci(m['delta_ci']):>18} "
            f"{m['gap_closed'] * 100:>9.1f}% {m['cost']:>10.3g} {m['calls']:>5.2f} {lat:>6}"
        )
    for name, sel in result.get("cv", {}).items():
        lines.append(f"CV ({result['folds']} folds) {name}: {sel['reason']}")
    if "routellm" in result:
        rl = result["routellm"]
        lines.append(
            f"RouteLLM slice {rl['strong']} (strong, {rl['strong_score']:.3f}) vs {rl['weak']} (weak, {rl['weak_score']:.3f}), "
            f"cost ratio {rl['cost_ratio']:.0f}x, {rl['test_items']} test items: "
            + "; ".join(
                f"{name} APGR {c['apgr']:.3f} CPT50 {_pct(c['cpt50'])} CPT80 {_pct(c['cpt80'])}"
                for name, c in rl["curves"].items()
            )
        )
    for c in result.get("cache", []):
        lines.append(
            f"decision cache (cos ≥ {c['threshold']}): hit rate {c['hit_rate']:.1%} (repeats {c['hit_rate_by_kind']['repeat']:.0%}, "
            f"paraphrases {c['hit_rate_by_kind']['paraphrase']:.0%}), score change {_ci(c['score_change_ci'])}, "
            f"p50 ms fresh {c['p50_ms_fresh']:.2f} / hit {c['p50_ms_hit'] or 0:.2f}"
        )
    if "eval_only" in result:
        lines.append(
            "eval_only (out-of-distribution tasks): "
            + ", ".join(f"{m['method']} {m['score']:.4f}" for m in result["eval_only"])
        )
    return "\n".join(lines)


def write_json(results: list[dict[str, Any]], path: Path, command: str, **extra: Any) -> None:
    """Results plus the command that made them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = [{k: v for k, v in res.items() if not k.startswith("_")} for res in results]
    path.write_text(json.dumps({"command": command, **extra, "results": clean}, indent=1, default=_json_default))


def _json_default(value: object) -> object:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """The cost–quality plot (see :mod:`podium.learned.eval_plot`)."""
    from .eval_plot import plot_cost_quality

    plot_cost_quality(results, path)

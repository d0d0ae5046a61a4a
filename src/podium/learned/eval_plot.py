"""Plots of ``podium eval replay``: the cost–quality plane, and cascade gain vs verifier accuracy."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any


def _pyplot() -> ModuleType:
    try:
        import matplotlib
    except ImportError:
        from ..errors import missing_extra

        raise missing_extra("matplotlib", "train") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_cost_quality(results: list[dict[str, Any]], path: Path) -> None:
    """One panel per dataset: single models as points, λ sweeps as lines, safe routers and cascades as markers."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4.4), squeeze=False)
    for ax, res in zip(axes[0], results):
        singles = [s for s in res["singles"] if s["score"] is not None]
        ax.scatter([s["cost"] for s in singles], [s["score"] for s in singles], c="0.6", s=14, label="single models")
        for name, style in (("learned", "o-"), ("knn", "s--"), ("predictor", "^:"), ("mf", "v-.")):
            pts = sorted((p for p in res.get("sweep", []) if p["method"] == name), key=lambda p: p["lambda"])
            ax.plot([p["cost"] for p in pts], [p["score"] for p in pts], style, label=f"{name} (λ sweep)", ms=4)
        for m in res["methods"]:
            if (
                m["method"] in ("oracle", "best_single", "learned", "learned@cap", "per_task")
                or "cascade" in m["method"]
            ):
                marker = "*" if m["method"] == "oracle" else "D" if m["method"] == "best_single" else "P"
                lo, hi = m["score_ci"]
                ax.errorbar(
                    [m["cost"]],
                    [m["score"]],
                    yerr=[[m["score"] - lo], [hi - m["score"]]],
                    fmt=marker,
                    ms=6,
                    label=m["method"],
                    zorder=3,
                    capsize=2,
                )
        ax.set_title(res["dataset"]["name"])
        ax.set_xlabel(f"mean cost per item ({res['dataset']['cost_source']})")
        ax.set_ylabel("test score (95% CI)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_verifier_gain(results: list[dict[str, Any]], path: Path) -> None:
    """Gain over the best single model of each cascade vs the verifier's accuracy (symmetric error rates)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4.0), squeeze=False)
    for ax, res in zip(axes[0], results):
        pts = res.get("verifier_sweep", [])
        for name in dict.fromkeys(p["method"] for p in pts):
            mine = sorted((p for p in pts if p["method"] == name), key=lambda p: p["accuracy"])
            acc = [p["accuracy"] for p in mine]
            ax.plot(acc, [p["gain"] for p in mine], "o-", ms=3, label=name)
            ax.fill_between(acc, [p["gain_ci"][0] for p in mine], [p["gain_ci"][1] for p in mine], alpha=0.15)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_title(res["dataset"]["name"])
        ax.set_xlabel("verifier accuracy (1 − false-accept = 1 − false-reject)")
        ax.set_ylabel("test score − best single (95% CI)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)

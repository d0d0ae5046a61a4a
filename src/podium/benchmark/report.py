"""The benchmark report: per coordinator accuracy (95% Wilson), cost, tokens, latency, calls, and an
exact McNemar test against the best single model on the items both have graded.

Written as ``report.json``, ``report.md`` and (with matplotlib) ``cost_accuracy.png``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import missing_extra
from .stats import mcnemar_exact, percentile, wilson


def latest_rows(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """One row per (task, coordinator): the last one written."""
    return {(r["task"], r["coordinator"]): r for r in rows}


def summarize(name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy with its 95% interval, mean cost/tokens/calls, and latency percentiles of one coordinator."""
    n = len(rows)
    k = sum(r["passed"] for r in rows)
    lo, hi = wilson(k, n)
    lat = [r["latency_s"] for r in rows]
    mean = (lambda key: sum(r[key] for r in rows) / n) if n else (lambda key: 0.0)
    return {
        "coordinator": name,
        "items": n,
        "passed": k,
        "accuracy": k / n if n else 0.0,
        "ci95": [lo, hi],
        "mean_score": mean("score"),
        "cost_usd_total": sum(r["cost_usd"] for r in rows),
        "cost_usd_per_item": mean("cost_usd"),
        "tokens_per_item": mean("tokens"),
        "calls_per_item": mean("calls"),
        "latency_p50_s": percentile(lat, 50),
        "latency_p95_s": percentile(lat, 95),
        "time_s_total": sum(lat),
        "statuses": {s: sum(r["status"] == s for r in rows) for s in sorted({r["status"] for r in rows})},
    }


def paired(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Exact McNemar test of coordinator ``a`` against ``b`` on the tasks both have graded."""
    common = sorted(set(a) & set(b))
    only_a = sum(a[t]["passed"] and not b[t]["passed"] for t in common)
    only_b = sum(b[t]["passed"] and not a[t]["passed"] for t in common)
    return {"items": len(common), "wins": only_a, "losses": only_b, "p_value": mcnemar_exact(only_a, only_b)}


def build_report(
    rows: list[dict[str, Any]], coordinators: list[str], meta: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The report dict: one summary per coordinator, the best single model, and paired tests against it."""
    latest = latest_rows(rows)
    by_coord: dict[str, dict[str, dict[str, Any]]] = {c: {} for c in coordinators}
    for (task, coord), row in latest.items():
        if coord in by_coord:
            by_coord[coord][task] = row
    summaries = [summarize(c, list(by_coord[c].values())) for c in coordinators]
    singles = [s for s in summaries if s["coordinator"].startswith("fixed:") and s["items"]]
    best = max(singles, key=lambda s: (s["accuracy"], -s["cost_usd_per_item"]), default=None)
    for s in summaries:
        s["vs_best_single"] = (
            paired(by_coord[s["coordinator"]], by_coord[best["coordinator"]]) if best and s is not best else None
        )
    families = sorted({r.get("family") or "-" for r in latest.values()})
    per_family = (
        {
            f: {
                c: summarize(c, [r for r in by_coord[c].values() if (r.get("family") or "-") == f])["accuracy"]
                for c in coordinators
            }
            for f in families
        }
        if len(families) > 1
        else {}
    )
    return {
        "meta": meta or {},
        "best_single": best["coordinator"] if best else None,
        "coordinators": summaries,
        "per_family_accuracy": per_family,
    }


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(report: dict[str, Any]) -> str:
    """The report as a markdown table (plus a line per paired test)."""
    best = report["best_single"]
    lines = [
        f"Best single model: `{best}`" if best else "No single-model baseline was run.",
        "",
        "| coordinator | items | accuracy | 95% CI | vs best single (wins/losses, McNemar p) | $/item | tokens/item | calls/item | p50 s | p95 s |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for s in report["coordinators"]:
        vs = s["vs_best_single"]
        test = (
            f"+{vs['wins']}/-{vs['losses']}, p={vs['p_value']:.3g}"
            if vs
            else ("(reference)" if s["coordinator"] == best else "-")
        )
        lo, hi = s["ci95"]
        lines.append(
            f"| `{s['coordinator']}` | {s['items']} | {s['accuracy']:.3f} | [{lo:.3f}, {hi:.3f}] | {test} | "
            f"{s['cost_usd_per_item']:.6f} | {s['tokens_per_item']:.0f} | {s['calls_per_item']:.2f} | "
            f"{_fmt(s['latency_p50_s'], '.2f')} | {_fmt(s['latency_p95_s'], '.2f')} |"
        )
    if report["per_family_accuracy"]:
        lines += [
            "",
            "Accuracy per task family:",
            "",
            "| family | " + " | ".join(f"`{s['coordinator']}`" for s in report["coordinators"]) + " |",
            "|---|" + "---:|" * len(report["coordinators"]),
        ]
        for fam, accs in report["per_family_accuracy"].items():
            lines.append(
                f"| {fam} | " + " | ".join(f"{accs[s['coordinator']]:.3f}" for s in report["coordinators"]) + " |"
            )
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> Path:
    """Cost per item against accuracy (with 95% intervals), one point per coordinator."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise missing_extra("matplotlib", "train") from None
    fig, ax = plt.subplots(figsize=(6, 4))
    for s in report["coordinators"]:
        x = s["cost_usd_per_item"] if s["cost_usd_per_item"] > 0 else s["tokens_per_item"]
        lo, hi = s["ci95"]
        ax.errorbar(
            [x],
            [s["accuracy"]],
            yerr=[[max(0.0, s["accuracy"] - lo)], [max(0.0, hi - s["accuracy"])]],
            fmt="o",
            capsize=3,
            label=s["coordinator"],
        )
    priced = any(s["cost_usd_per_item"] > 0 for s in report["coordinators"])
    ax.set_xlabel("cost per item (USD)" if priced else "tokens per item (pool has no prices)")
    ax.set_ylabel("accuracy (95% Wilson CI)")
    ax.set_title(report["meta"].get("title", "podium bench"))
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(report: dict[str, Any], out_dir: Path, *, with_plot: bool = True) -> list[Path]:
    """Write report.json, report.md and (when matplotlib is installed and asked for) the PNG."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "report.json", out_dir / "report.md"]
    written[0].write_text(json.dumps(report, indent=2) + "\n")
    written[1].write_text(markdown(report))
    if with_plot:
        written.append(plot(report, out_dir / "cost_accuracy.png"))
    return written

"""Write bench/results/replay_eval.md from the JSON of `podium eval replay` (tables only; numbers not retyped).

Usage: python bench/replay_report.py bench/results/replay_eval.json [--wall "N min S s"] [--uptime "..."] > out.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def ci(pair) -> str:
    return f"[{pair[0]:.3f}, {pair[1]:.3f}]" if pair else ""


def pct(value) -> str:
    return "never" if value is None else f"{value:.0%}"


def methods_table(res: dict) -> list[str]:
    lines = [
        "| method | test score | 95% CI | Δ vs best single, 95% CI (paired) | gap closed (95% CI) | cost / item | calls | latency ms | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for m in res["methods"]:
        lat = f"{m['latency_ms']:.2f}" if m["latency_ms"] is not None else ""
        gap = (
            f"{m['gap_closed'] * 100:.1f}% ({m['gap_ci'][0] * 100:.0f}…{m['gap_ci'][1] * 100:.0f}%)"
            if m["gap_ci"]
            else ""
        )
        name = (
            f"**{m['method']}**" if m["method"] in ("learned", "learned@cap", "learned_cascade@3 cap") else m["method"]
        )
        lines.append(
            f"| {name} | {m['score']:.4f} | {ci(m['score_ci'])} | {ci(m['delta_ci'])} | {gap} | {m['cost']:.3g} | "
            f"{m['calls']:.2f} | {lat} | {m.get('note', '')} |"
        )
    return lines


def cv_lines(res: dict) -> list[str]:
    out = [
        f"- CV ({res['folds']} folds on train), `{name}`: {sel['reason']} ({sel['candidates']} candidates, Bonferroni)"
        for name, sel in res["cv"].items()
    ]
    c = res["cascade_cv"]
    out.append(
        f"- CV, `learned_cascade@3 cap` (cost ≤ best single's on CV): {c['reason']} ({c['candidates']} candidates)"
    )
    return out


def routellm_lines(results: list[dict]) -> list[str]:
    lines = [
        "| dataset | strong (score) | weak (score) | cost ratio | test items | router | APGR | CPT(50%) | CPT(80%) |",
        "|---|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for res in results:
        rl = res.get("routellm")
        if not rl:
            continue
        for name, c in rl["curves"].items():
            lines.append(
                f"| {res['dataset']['name']} | {rl['strong']} ({rl['strong_score']:.3f}) | {rl['weak']} ({rl['weak_score']:.3f}) | "
                f"{rl['cost_ratio']:.0f}× | {rl['test_items']} | {name} | {c['apgr']:.3f} | {pct(c['cpt50'])} | {pct(c['cpt80'])} |"
            )
    return lines


ROUTELLM_PUBLISHED = [
    "RouteLLM's published figures, for reference (Ong et al. 2024, *RouteLLM: Learning to Route LLMs with",
    "Preference Data*, arXiv:2406.18665, GPT-4-1106 vs Mixtral-8x7B; other model pairs and benchmarks than",
    "the slices above, so compare the size of the gain over random, not the values):",
    "",
    "| benchmark | router (training data) | APGR | CPT(50%) | CPT(80%) |",
    "|---|---|---:|---:|---:|",
    "| MT Bench | random | 0.500 | 49.0% | ~80% |",
    "| MT Bench | MF (Arena + GPT-4-judge labels), best | 0.802 | 13.4% | 31.3% |",
    "| MMLU | best RouteLLM router per column (Arena + MMLU gold labels) | 0.603 | 35.4% | 70.3% |",
    "| GSM8K | best RouteLLM router, from the paper's cost-saving table (1.49× / 1.27× fewer strong calls than random) | — | ≈33.6% | ≈63% |",
    "",
    "The paper also reports that its routers trained on Arena preferences alone are close to random on",
    "MMLU: without labels from the target distribution, a router learns little. GSM8K's CPT values are",
    "derived here from the saving ratios (random needs 50% / 80%), not printed in the paper as such.",
]


def knob_lines(results: list[dict]) -> list[str]:
    weights = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)
    lines = [
        "| dataset (strong/weak slice) | " + " | ".join(f"w={w:g}" for w in weights) + " |",
        "|---|" + "---:|" * len(weights),
    ]
    for res in results:
        rl = res.get("routellm")
        if not rl:
            continue
        by_w = {p["cost_weight"]: p for p in rl["knob"]}
        cells = [f"{by_w[w]['strong_share']:.0%} / {by_w[w]['score']:.3f}" for w in weights if w in by_w]
        lines.append(f"| {res['dataset']['name']} | " + " | ".join(cells) + " |")
    return lines


def cache_lines(results: list[dict]) -> list[str]:
    lines = [
        "| dataset | threshold | queries | hit rate | repeats hit | paraphrases hit | hits from another item | score fresh → cached | change 95% CI | p50 ms fresh | p50 ms hit |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for res in results:
        for c in res.get("cache", []):
            hit = f"{c['p50_ms_hit']:.2f}" if c["p50_ms_hit"] is not None else ""
            lines.append(
                f"| {res['dataset']['name']} | {c['threshold']} | {c['queries']} | {c['hit_rate']:.1%} | {c['hit_rate_by_kind']['repeat']:.0%} | "
                f"{c['hit_rate_by_kind']['paraphrase']:.0%} | {c['hits_from_another_item']} | {c['score_fresh']:.4f} → {c['score_cached']:.4f} | "
                f"{ci(c['score_change_ci'])} | {c['p50_ms_fresh']:.2f} | {hit} |"
            )
    return lines


def verifier_lines(results: list[dict]) -> list[str]:
    lines = [
        "| dataset | cascade | " + " | ".join(f"acc {1 - e:.2f}" for e in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)) + " |",
        "|---|---|" + "---:|" * 6,
    ]
    for res in results:
        pts = res.get("verifier_sweep", [])
        for name in dict.fromkeys(p["method"] for p in pts):
            by_e = {round(p["error_rate"], 2): p for p in pts if p["method"] == name}
            cells = [
                f"{by_e[e]['gain']:+.3f}" + ("*" if by_e[e]["gain_ci"][0] > 0 else "")
                for e in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
                if e in by_e
            ]
            lines.append(f"| {res['dataset']['name']} | {name} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("json_path", type=Path)
    args = parser.parse_args()
    data = json.loads(args.json_path.read_text())
    results = data["results"]
    out = [f"Command: `{data['command']}`", ""]
    for res in results:
        d = res["dataset"]
        out += [
            f"### {d['name']}",
            "",
            f"{res['test_items']} test items, {d['models']} models, cost: {d['cost_source']}, best single: "
            f"{res['best_single_model']}; cascades: {res['verifier']['label']}; {res['seconds']} s.",
            "",
        ]
        out += methods_table(res) + [""] + cv_lines(res) + [""]
        if "eval_only" in res:
            eo = {m["method"]: m for m in res["eval_only"]}
            out += [
                "eval_only (out-of-distribution tasks): "
                + ", ".join(
                    f"{n} {eo[n]['score']:.4f} {ci(eo[n]['delta_ci'])}"
                    for n in ("best_single", "per_task", "mf", "knn", "learned_ungated", "learned")
                    if n in eo
                ),
                "",
            ]
    out += [
        "### Cascade gain over the best single model vs verifier accuracy (symmetric error rates; * = paired 95% CI above 0)",
        "",
    ]
    out += verifier_lines(results) + [""]
    out += (
        ["### RouteLLM metrics on the strong/weak slices", ""]
        + routellm_lines(results)
        + [""]
        + ROUTELLM_PUBLISHED
        + [""]
    )
    out += (
        ["### Cost knob on the same slices: share of strong calls / test score at cost_weight w", ""]
        + knob_lines(results)
        + [""]
    )
    out += ["### Routing-decision cache (repeated and paraphrased test queries)", ""] + cache_lines(results) + [""]
    print("\n".join(out))


if __name__ == "__main__":
    main()

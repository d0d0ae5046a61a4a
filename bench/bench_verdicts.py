"""Verdict reader accuracy on the labelled corpus (tests/data/verdicts.jsonl).

Peer, in the same run: the reader podium shipped before issue 11 (keyword search with a leading
keyword rule), copied verbatim below. Reports accuracy, false-accept rate (REVISE-labelled replies
read as ACCEPT: a wrong answer marked verified) and false-reject rate, overall and per source,
with Wilson 95% intervals, and the error-rate ratio new / old.

    python bench/bench_verdicts.py

Writes bench/results/verdicts.md and bench/results/verdicts.json.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path

from podium.types import Verdict
from podium.verdicts import parse_verdict

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "verdicts.jsonl"
RESULTS = ROOT / "bench" / "results"

# --- the previous reader (src/podium/roles.py before issue 11), verbatim ---------------------------
_ACCEPT = re.compile(r"\b(accept(?:ed|able)?|approved?|lgtm|looks good|is correct|correct\b(?! it))", re.I)
_REVISE = re.compile(
    r"\b(revise|reject(?:ed)?|incorrect|wrong|not correct|error|fix|mistake|needs? (?:work|changes))", re.I
)
_LEAD = re.compile(r"^\W*(?:verdict\s*[:=]\s*)?(accept|revise|reject)", re.I)


def old_parse_verdict(text: str) -> tuple[Verdict, str]:
    stripped = text.strip()
    lead = _LEAD.match(stripped)
    if lead:
        verdict = Verdict.ACCEPT if lead.group(1).lower() == "accept" else Verdict.REVISE
        return verdict, stripped[lead.end() :].strip(" :.-*\n") or stripped
    rev, acc = _REVISE.search(stripped), _ACCEPT.search(stripped)
    if rev and (not acc or rev.start() <= acc.start()):
        return Verdict.REVISE, stripped
    if acc:
        return Verdict.ACCEPT, stripped
    return Verdict.REVISE, stripped or "verifier gave no verdict"


# ----------------------------------------------------------------------------------------------------


HELD_OUT_NOTE = (
    "The 40 held-out rows were written after the reader was frozen and scored once before any change: "
    '35/40 right, 4 false accepts ("ACCEPT!!! (no, really, it\'s broken)", "It\'s hard to say whether it\'s correct.", '
    '"The answer is not incorrect, but it misses the second part...", "No mistakes found, but ... I cannot confirm.") '
    'and 1 false reject ("Nothing to change."). The reader was then fixed, so the table above shows them after the fix; '
    "expect a comparable error rate on phrasings nobody has looked at yet. Likewise the 98 embedded replies were "
    'labelled before the reader saw them: first pass 95/98 right, 2 false accepts ("...to solve it correctly..." '
    'in a reply stating no verdict, and a code comment "# ... is the correct output") and 1 false reject; an added '
    'adversarial row ("Please confirm the date before I accept it.") was a false accept too. Fixed since: purpose and '
    "temporal clauses are not verdicts, code blocks are ignored in free text."
)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score 95% interval for k successes out of n."""
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def score(rows: list[dict], reader) -> dict:
    got = [reader(r["text"])[0].value for r in rows]
    n = len(rows)
    correct = sum(g == r["label"] for g, r in zip(got, rows))
    revise = [g for g, r in zip(got, rows) if r["label"] == "REVISE"]
    accept = [g for g, r in zip(got, rows) if r["label"] == "ACCEPT"]
    fa, fr = revise.count("ACCEPT"), accept.count("REVISE")
    return {
        "n": n,
        "accuracy": correct / n if n else 0.0,
        "accuracy_ci95": wilson(correct, n),
        "false_accepts": fa,
        "false_accept_rate": fa / len(revise) if revise else 0.0,
        "false_accept_ci95": wilson(fa, len(revise)),
        "false_rejects": fr,
        "false_reject_rate": fr / len(accept) if accept else 0.0,
        "false_reject_ci95": wilson(fr, len(accept)),
    }


def table(report: dict) -> str:
    lines = [
        "| subset | reader | n | accuracy (95% CI) | false accepts | false-accept rate (95% CI) | false-reject rate (95% CI) |",
        "|---|---|---:|---|---:|---|---|",
    ]
    for subset, readers in report["subsets"].items():
        for name, m in readers.items():
            lines.append(
                f"| {subset} | {name} | {m['n']} | {m['accuracy']:.3f} ({m['accuracy_ci95'][0]:.3f}-{m['accuracy_ci95'][1]:.3f}) "
                f"| {m['false_accepts']} | {m['false_accept_rate']:.3f} ({m['false_accept_ci95'][0]:.3f}-{m['false_accept_ci95'][1]:.3f}) "
                f"| {m['false_reject_rate']:.3f} ({m['false_reject_ci95'][0]:.3f}-{m['false_reject_ci95'][1]:.3f}) |"
            )
    return "\n".join(lines)


def main() -> None:
    rows = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
    started = time.perf_counter()
    subsets = {
        "all": rows,
        **{s: [r for r in rows if r["source"] == s] for s in sorted({r["source"] for r in rows})},
        "held-out rows": [r for r in rows if r.get("split") == "heldout"],
    }
    report = {
        "corpus": str(CORPUS.relative_to(ROOT)),
        "load": os.getloadavg(),
        "subsets": {
            name: {"new": score(sub, parse_verdict), "old": score(sub, old_parse_verdict)}
            for name, sub in subsets.items()
        },
    }
    new, old = report["subsets"]["all"]["new"], report["subsets"]["all"]["old"]
    report["error_ratio_new_over_old"] = (1 - new["accuracy"]) / (1 - old["accuracy"]) if old["accuracy"] < 1 else None
    report["seconds"] = time.perf_counter() - started
    md = (
        f"# Verdict reader on {len(rows)} labelled verifier replies\n\n{table(report)}\n\n"
        f"Errors new / old: **{report['error_ratio_new_over_old']:.3f}**; false accepts new {new['false_accepts']} vs old {old['false_accepts']}.\n"
        f"{HELD_OUT_NOTE}\n"
        f"Machine load (1/5/15 min): {report['load'][0]:.2f} / {report['load'][1]:.2f} / {report['load'][2]:.2f}.\n"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "verdicts.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "verdicts.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()

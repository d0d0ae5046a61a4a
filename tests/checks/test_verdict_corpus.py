"""The labelled corpus of verifier replies (tests/data/verdicts.jsonl): accuracy, and no false accepts."""

from __future__ import annotations

import json
from pathlib import Path

from podium.roles import parse_verdict

CORPUS = Path(__file__).parents[1] / "data" / "verdicts.jsonl"


def test_corpus_accuracy_and_no_false_accepts() -> None:
    rows = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
    assert len(rows) >= 200
    assert {r["source"] for r in rows} == {"embedded", "llm-phrasing", "adversarial"}
    wrong = [(r["label"], r["text"]) for r in rows if parse_verdict(r["text"])[0].value != r["label"]]
    false_accepts = [text for label, text in wrong if label == "REVISE"]
    assert false_accepts == []
    assert len(wrong) / len(rows) <= 0.03, wrong

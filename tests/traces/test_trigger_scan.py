"""The anchored trigger scan (podium._secret_shapes.has_trigger, which decides whether a stored run's strings
need scrubbing) finds exactly what the plain alternation of every pattern's triggers finds: near
misses, triggers split across anchors, triggers at the text's edges and inside a run's JSON."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podium import scrub as scrub_module
from podium._secret_shapes import anchored_scans, has_trigger
from podium.scrub import _may_need_scrub, alternatives

TRIGGERS = sorted({t for triggers, _ in scrub_module.PATTERNS for t in triggers})
PLAIN = re.compile("|".join(re.escape(t) for t in TRIGGERS))


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(TRIGGERS) | st.text(alphabet="abfghiklnoprstuvxz_-8 ", max_size=6), max_size=8))
def test_the_anchored_scan_finds_what_the_plain_alternation_finds(parts: list[str]) -> None:
    # halves of triggers glued to other fragments: near misses must not match, whole ones must
    text = "".join(part[: len(part) // 2 + 1] if i % 3 == 1 else part for i, part in enumerate(parts))
    assert has_trigger(text) == bool(PLAIN.search(text)), text


@pytest.mark.parametrize("trigger", TRIGGERS)
def test_every_trigger_is_found_alone_at_either_edge_and_inside_json(trigger: str) -> None:
    assert has_trigger(trigger)
    assert has_trigger(f'{{"prompt_tokens":1,"output":"x {trigger}"}}')
    assert has_trigger(trigger + " tail") and has_trigger("head " + trigger)
    assert not has_trigger(trigger[:-1]) or PLAIN.search(trigger[:-1])
    assert _may_need_scrub(f'{{"output":"{trigger.upper()}"}}')  # the scan sees the lower-cased text


def test_each_anchor_scan_starts_with_its_literal_anchor() -> None:
    # a literal first character is what makes the regex engine skip ahead (not a test at every position)
    for anchor, regex in anchored_scans(["authorization", "sk-", "bearer", "xox", "abc"]):
        assert regex.pattern.startswith(re.escape(anchor))
    assert {a for a, _ in anchored_scans(["authorization", "sk-", "bearer"])} == {"z", "k", "b"}


def test_a_clean_run_json_has_no_trigger() -> None:
    text = '{"run_id":"run_1","prompt_tokens":52,"fallback_from":null,"usage_estimated":false,"query":"What is 4+2?"}'
    assert not has_trigger(text.lower())


@settings(max_examples=500, deadline=None)
@given(st.lists(st.text(min_size=1), min_size=1, max_size=5), st.text())
def test_the_secret_literals_are_the_alternations_values(values: list[str], text: str) -> None:
    pattern = re.compile("|".join(map(re.escape, values)))
    assert alternatives(pattern.pattern) == tuple(values)
    planted = text + values[-1] + text
    for sample in (text, planted):
        assert any(v in sample for v in alternatives(pattern.pattern)) == bool(pattern.search(sample))


def test_a_planted_secret_is_found_among_several(monkeypatch: pytest.MonkeyPatch) -> None:
    from podium.scrub import refresh

    keys = {"A_API_KEY": "sk-first-0123456789abcdef", "B_TOKEN": "zz-second-secret-value", "C_SECRET": 'q\\u"ote-d'}
    for name, value in keys.items():
        monkeypatch.setenv(name, value)
    refresh()
    try:
        import json

        for value in keys.values():
            assert _may_need_scrub(json.dumps({"output": f"say {value} now"}, ensure_ascii=False))
        assert not _may_need_scrub('{"output": "nothing here"}')
    finally:
        monkeypatch.undo()
        refresh()

"""Verifier output parsing: tolerant of free text, never accepts by default."""

import pytest

from podium.roles import build_messages, parse_verdict
from podium.types import Role, Verdict


@pytest.mark.parametrize(
    "text, verdict",
    [
        ("ACCEPT", Verdict.ACCEPT),
        ("accept.", Verdict.ACCEPT),
        ("**ACCEPT** the answer is right", Verdict.ACCEPT),
        ("Verdict: REVISE - the sum is off by one", Verdict.REVISE),
        ("REJECT", Verdict.REVISE),
        ("The answer is correct and complete.", Verdict.ACCEPT),
        ("This is incorrect: 17*23 is 391, not 381.", Verdict.REVISE),
        ("I would revise it, although parts are correct", Verdict.REVISE),
        ("Looks good to me", Verdict.ACCEPT),
        ("", Verdict.REVISE),
        ("The weather is nice.", Verdict.REVISE),
    ],
)
def test_parse_verdict(text: str, verdict: Verdict) -> None:
    assert parse_verdict(text)[0] == verdict


def test_diagnosis_is_the_text_after_the_keyword() -> None:
    assert parse_verdict("REVISE: the units are missing")[1] == "the units are missing"


def test_template_override_is_used() -> None:
    msgs = build_messages(Role.WORKER, "2+2?", [], {"worker": "Q={query}{plan}"})
    assert msgs[0].content == "Q=2+2?"

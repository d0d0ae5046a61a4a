"""Verifier verdicts: the protocol line first, then free text with negation; never accept without a clear signal."""

from __future__ import annotations

import pytest

from podium.roles import parse_verdict
from podium.types import Verdict

A, R = Verdict.ACCEPT, Verdict.REVISE


@pytest.mark.parametrize(
    "text, verdict",
    [
        # the misreads reported in issue 11
        ("PASSES VERIFICATION", A),
        ("The answer has no mistake. ACCEPT", A),
        ("I cannot ACCEPT this; REVISE: the loop is off by one", R),
        ("Do not accept. Revise the SQL", R),
        # negation and questions
        ("not accept", R),
        ("ACCEPT? No. The total is wrong.", R),
        ("Should I accept this? No.", R),
        ("I would not accept this answer.", R),
        ("FAILS VERIFICATION: 17*23 is 391", R),
        ("There are no errors; the answer is correct.", A),
        ("I don't think this is correct.", R),
        ("It is not correct", R),
        ("Please correct the off-by-one in the loop.", R),
        # the protocol line
        ("The product 17*23 is 391, as stated.\nVERDICT: ACCEPT", A),
        ("The sum is off by one.\nVERDICT: REVISE", R),
        ("**Verdict:** ACCEPT", A),
        ("VERDICT: ACCEPT or VERDICT: REVISE", R),
        ("VERDICT: ACCEPT\nActually the loop never ends, so it is wrong.", R),
        ("I first thought REVISE, but on checking each step it holds.\nVERDICT: ACCEPT", A),
        ('{"verdict": "ACCEPT", "diagnosis": "correct"}', A),
        ('{"verdict": "REVISE", "diagnosis": "wrong base case"}', R),
        # common phrasings
        ("LGTM", A),
        ("Looks correct to me.", A),
        ("The answer is incorrect.", R),
        ("", R),
        ("Hmm, let me think about the question.", R),
        ("Is the answer correct?", R),
    ],
)
def test_verdicts(text: str, verdict: Verdict) -> None:
    assert parse_verdict(text)[0] == verdict


def test_diagnosis_of_a_protocol_reply_is_the_reason() -> None:
    verdict, diagnosis = parse_verdict("The loop stops one element early.\nVERDICT: REVISE")
    assert verdict == R and diagnosis == "The loop stops one element early."
    assert parse_verdict("VERDICT: REVISE - the units are missing")[1] == "the units are missing"

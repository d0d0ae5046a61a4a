"""Reading a verifier's reply: the ``VERDICT:`` protocol line first, then free text with negation.

Order: a JSON object with a ``verdict`` key (structured output), else the last ``VERDICT: X``
line (the prompt asks for it), else free-text signals. Free text accepts only with at least one
positive signal ("ACCEPT", "passes verification", "LGTM", "is correct", "no mistakes") and no
negative one ("REVISE", "incorrect", "fails", "cannot accept", "ACCEPT? No"). A signal is flipped
by an odd number of negators ("not", "cannot", "no", "don't", ...) among the few words before it
in the same clause. No clear signal means REVISE: an unverified answer is never accepted.
"""

from __future__ import annotations

import json
import re

from .types import Verdict

PROTOCOL_ACCEPT, PROTOCOL_REVISE = "VERDICT: ACCEPT", "VERDICT: REVISE"
# OpenAI-style structured output for verifier calls (sent only to models with structured_output: true)
VERDICT_RESPONSE_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "verdict",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {
                "diagnosis": {"type": "string"},
                "verdict": {"type": "string", "enum": ["ACCEPT", "REVISE"]},
            },
            "required": ["diagnosis", "verdict"],
            "additionalProperties": False,
        },
    },
}

_PROTOCOL = re.compile(r"\bverdict\b\W{0,6}(accept(?:ed)?|revised?|reject(?:ed)?)\b", re.I)
_AMBIGUOUS = re.compile(r"\s*(?:\?|/|\||\bor\b)", re.I)
_JSON = re.compile(r"\{[^{}]*\"verdict\"[^{}]*\}", re.I | re.S)
_LEAD = re.compile(r"^\W*(?:verdict\s*[:=]\s*)?(accept|revise|reject)\b\W*", re.I)

_POSITIVE = [
    r"accept(?:s|ed|able)?",
    r"approved?",
    r"approves",
    r"lgtm",
    r"looks? (?:good|correct|right|fine|great)",
    r"correct(?:ly|ness)?",
    r"(?:is|are|was|looks|seems|'s) (?:all |exactly |entirely |completely )?(?:right|accurate|valid|sound)",
    r"pass(?:es|ed)?(?: all)? (?:the )?(?:verification|check|checks|tests?|review)",
    r"passes",
    r"verified",
    r"well done",
    r"spot on",
    r"all good",
    r"checks out",
    r"holds up",
    r"confirmed",
    r"nothing to (?:change|fix|correct|add|improve)",
    r"no changes? (?:needed|required)",
]
_NEGATIVE = [
    r"(?:mostly|partially|partly|almost|nearly|largely|somewhat|half) (?:correct|right|accurate)",
    r"(?:is|are|was|were|does|did) not(?=\s*[.;!]|\s*$)",
    r"(?:isn't|aren't|wasn't|doesn't|didn't)(?=\s*[.;!]|\s*$)",
    r"revis(?:e|ed|ion|ing)",
    r"reject(?:s|ed)?",
    r"incorrect(?:ly)?",
    r"wrong(?:ly)?",
    r"errors?",
    r"erroneous",
    r"mistakes?",
    r"mistaken(?:ly)?",
    r"bugs?",
    r"buggy",
    r"fail(?:s|ed|ure|ures|ing)?(?!\s+to\b)",
    r"flaw(?:s|ed)?",
    r"off[- ]by[- ]one",
    r"invalid",
    r"inaccura(?:te|cy)",
    r"incomplete",
    r"unacceptable",
    r"missing",
    r"typos?",
    r"needs? (?:work|changes|fixing|revision|improvement|to be (?:fixed|corrected|changed))",
    r"fix(?:ed|es|ing)?",
    r"should (?:be|have|return|use)",
    r"correct(?:ed|ion|ions)\b",
    r"correct (?:it|this|that|the|them|these|those|your|its)",
    r"(?:isn't|is not|not) (?:quite |entirely |exactly )?(?:right|accurate|valid|true)",
    r"false",
    r"wrongly",
    r"nonsense",
    r"does(?:n't| not) (?:work|compile|run|answer|handle|match)",
    r"broken",
    r"crash(?:es|ed)?",
    r"misses",
    r"overlooks?",
    r"ignores?",
    r"unrelated",
    r"contradicts?",
    r"infinite loop",
    r"hard to (?:say|tell)",
    r"(?:cannot|can't|could not|couldn't|unable to) (?:confirm|verify|check|tell)",
    r"not sure",
    r"unsure",
    r"unclear",
]
_SIGNAL = re.compile(r"\b(?:(?P<neg>" + "|".join(_NEGATIVE) + r")|(?P<pos>" + "|".join(_POSITIVE) + r"))\b", re.I)
_NEGATORS = re.compile(
    r"\b(?:not|no|never|cannot|can't|cant|won't|wont|don't|dont|doesn't|didn't|isn't|aren't|wasn't|"
    r"shouldn't|wouldn't|couldn't|nothing|without|neither|nor|unable|refuse|fails to|failed to|hardly|zero|free of)\b",
    re.I,
)
_CLAUSE_END = re.compile(r"[.,;!?\n]|\band\b|\bso\b|\bbecause\b|\bbut\b|\bhowever\b|\balthough\b|\bthough\b", re.I)
_CONDITIONAL_BEFORE = re.compile(
    r"\b(?:would be|would have been|could|might|may|should|if|whether|to|before|until|once)\s+(?:[\w']+\s+){0,2}$", re.I
)
_CONDITIONAL_AFTER = re.compile(r"\b(?:if|unless|provided|once|when)\b", re.I)
_LABEL_ANSWER = re.compile(
    r"\s*[:=]\s*\**\s*(?:(?P<no>no|false|fail(?:ed)?|none|bad)|(?P<yes>yes|true|pass(?:ed)?|ok))\b", re.I
)
_CODE = re.compile(r"```.*?(?:```|\Z)", re.S)  # code (and its comments) is not the verifier speaking
_ANSWER_NO = re.compile(r"\s*(?:no|nope|not really|definitely not)\b", re.I)
_ANSWER_YES = re.compile(r"\s*(?:yes|yep|yeah|indeed)\b", re.I)
WINDOW_WORDS = 5


def parse_verdict(text: str) -> tuple[Verdict, str]:
    """ACCEPT or REVISE, and a diagnosis (what is wrong, or why it is right), from a verifier reply."""
    stripped = (text or "").strip()
    structured = _from_json(stripped)
    if structured is not None:
        return structured
    protocol = _from_protocol(stripped)
    if protocol is not None:
        return protocol
    verdict = Verdict.ACCEPT if _free_text_accepts(_CODE.sub(" ", stripped)) else Verdict.REVISE
    lead = _LEAD.match(stripped)
    diagnosis = stripped[lead.end() :].strip() if lead else stripped
    return verdict, diagnosis or stripped or "verifier gave no verdict"


def _from_json(text: str) -> tuple[Verdict, str] | None:
    found = _JSON.findall(text)
    if not found:
        return None
    try:
        data = json.loads(found[-1])
    except ValueError:
        return None
    value = str(data.get("verdict", "")).strip().upper()
    if value not in ("ACCEPT", "REVISE", "REJECT"):
        return None
    diagnosis = str(data.get("diagnosis") or data.get("reason") or "").strip() or text
    return (Verdict.ACCEPT if value == "ACCEPT" else Verdict.REVISE), diagnosis


def _from_protocol(text: str) -> tuple[Verdict, str] | None:
    matches = list(_PROTOCOL.finditer(text))
    if not matches:
        return None
    last = matches[-1]
    if _AMBIGUOUS.match(text, last.end()):  # "VERDICT: ACCEPT or REVISE", "VERDICT: ACCEPT?"
        return None
    after = text[last.end() :]
    accept = last.group(1).lower().startswith("accept") and _count(after)[1] == 0  # nothing negative after it
    line_rest = after.split("\n", 1)[0].strip(" \t:-–—*.`")
    reasoning = _PROTOCOL.sub("", text).strip(" \t\n:-–—*`")
    return (Verdict.ACCEPT if accept else Verdict.REVISE), line_rest or reasoning or text


def _free_text_accepts(text: str) -> bool:
    positives, negatives = _count(text)
    return positives > 0 and negatives == 0


def _count(text: str) -> tuple[int, int]:
    """(positive, negative) signals in ``text`` after negation and question handling."""
    positives = negatives = 0
    for m in _SIGNAL.finditer(text):
        polarity = 1 if m.group("pos") else -1
        if _negated(text, m.start()):
            polarity = -polarity
        polarity = _questioned(text, m.end(), polarity)
        if polarity > 0 and m.group("pos"):
            polarity = _conditioned(text, m.start(), m.end())
        label = _LABEL_ANSWER.match(text, m.end())  # "Correctness: no", "Errors: none" (not "REVISE: no ...")
        if label and m.group("pos"):
            polarity = -1 if label.group("no") else 1
        elif label and label.group("no") and label.group("no").lower() == "none":
            polarity = 1
        positives += polarity > 0
        negatives += polarity < 0
    return positives, negatives


def _negated(text: str, start: int) -> bool:
    """An odd number of negators among the last few words of the clause before ``start``."""
    ends = list(_CLAUSE_END.finditer(text, 0, start))
    clause = text[ends[-1].end() if ends else 0 : start]
    words = " ".join(clause.split()[-WINDOW_WORDS:])
    return len(_NEGATORS.findall(words)) % 2 == 1


def _conditioned(text: str, start: int, end: int) -> int:
    """A positive said under a condition ("would be correct if", "I'd accept it only if",
    "should ACCEPT answers that") is not a verdict: 0; otherwise 1."""
    if _CONDITIONAL_BEFORE.search(text, max(0, start - 40), start):
        return 0
    stop = _CLAUSE_END.search(text, end)
    rest = text[end : stop.start() if stop else len(text)]
    return 0 if _CONDITIONAL_AFTER.search(rest) else 1


def _questioned(text: str, end: int, polarity: int) -> int:
    """A signal inside a question counts only through its answer: "ACCEPT? No" is negative,
    "Is it correct?" alone says nothing; a questioned negative without a "no" stays negative."""
    stop = _CLAUSE_END.search(text, end)
    if stop is None or stop.group(0) != "?":
        return polarity
    answer = text[stop.end() :]
    if _ANSWER_NO.match(answer):
        return -polarity
    if _ANSWER_YES.match(answer):
        return polarity
    return 0 if polarity > 0 else polarity

"""Role prompts (overridable templates) and the verifier-output parser.

Templates use ``str.format`` fields: ``{query}``, ``{plan}``, ``{answer}``, ``{feedback}``,
``{instruction}``. A pool's ``prompts:`` section replaces any of them.
"""

from __future__ import annotations

import re

from podium.types import ChatMessage, Role, Turn, Verdict

DEFAULT_PROMPTS: dict[str, str] = {
    "thinker": (
        "You are the planner in a team of models. Do not solve the task. Write a short numbered plan "
        "(at most 4 steps) that a worker can follow to answer it.\n\nTask: {query}"
    ),
    "worker": (
        "Answer the task. Be correct and concise; give the final answer clearly.\n\nTask: {query}"
        "{plan}{feedback}{instruction}"
    ),
    "verifier": (
        "You check another model's answer. Reply with ACCEPT if the answer is correct and complete, "
        "otherwise REVISE followed by one sentence saying what is wrong. Start your reply with ACCEPT or REVISE."
        "\n\nTask: {query}\n\nAnswer to check:\n{answer}"
    ),
}

_ACCEPT = re.compile(r"\b(accept(?:ed|able)?|approved?|lgtm|looks good|is correct|correct\b(?! it))", re.I)
_REVISE = re.compile(r"\b(revise|reject(?:ed)?|incorrect|wrong|not correct|error|fix|mistake|needs? (?:work|changes))", re.I)
_LEAD = re.compile(r"^\W*(?:verdict\s*[:=]\s*)?(accept|revise|reject)", re.I)


def parse_verdict(text: str) -> tuple[Verdict, str]:
    """Read ACCEPT or REVISE plus a diagnosis from free text.

    A leading keyword (``ACCEPT``, ``Verdict: REVISE``, ``**REJECT**``) decides. Otherwise the
    earliest explicit word in the text decides (``revise``/``reject``/``incorrect`` ... against
    ``accept``/``correct`` ...). With no signal at all the answer is sent back (REVISE): an
    unverifiable answer is never accepted by default.
    """
    stripped = text.strip()
    lead = _LEAD.match(stripped)
    if lead:
        verdict = Verdict.ACCEPT if lead.group(1).lower() == "accept" else Verdict.REVISE
        return verdict, stripped[lead.end():].strip(" :.-*\n") or stripped
    rev, acc = _REVISE.search(stripped), _ACCEPT.search(stripped)
    if rev and (not acc or rev.start() <= acc.start()):
        return Verdict.REVISE, stripped
    if acc:
        return Verdict.ACCEPT, stripped
    return Verdict.REVISE, stripped or "verifier gave no verdict"


def _section(title: str, body: str | None) -> str:
    return f"\n\n{title}:\n{body}" if body else ""


def build_messages(role: Role, query: str, turns: list[Turn], templates: dict[str, str], instruction: str | None = None) -> list[ChatMessage]:
    """The chat a model sees in ``role``: its template filled from the transcript so far."""
    plan = next((t.output for t in reversed(turns) if t.role == Role.THINKER and not t.error), None)
    answer = next((t.output for t in reversed(turns) if t.role == Role.WORKER and not t.error), None)
    last_verdict = next((t for t in reversed(turns) if t.role == Role.VERIFIER and not t.error), None)
    feedback = None
    if last_verdict and last_verdict.verdict == Verdict.REVISE and answer:
        feedback = f"Previous answer:\n{answer}\n\nReviewer feedback: {last_verdict.diagnosis}\nWrite an improved answer."
    fields = {
        "query": query,
        "plan": _section("Plan", plan),
        "answer": answer or "(no answer yet)",
        "feedback": _section("Revision needed", feedback),
        "instruction": _section("Focus", instruction),
    }
    template = templates.get(role.value) or DEFAULT_PROMPTS[role.value]
    return [ChatMessage(role="user", content=template.format(**fields))]

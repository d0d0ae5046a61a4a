"""A small LLM (the pool's coordinator model) names the next role.

It sees the query and one line per turn so far, and must answer with one word: THINKER, WORKER,
VERIFIER. The answer is validated: the first role word found in the reply counts. When the reply
names no role, names a role that is not allowed now (a verifier before any answer), or the call
fails, the documented fallback is the ``rules`` coordinator's choice, and the reason says so.
The model for the chosen role is the pool's default for that role.
"""

from __future__ import annotations

import re

from ..errors import BackendError, BudgetExhausted, PolicyError
from ..roles import forbidden_role
from ..types import ChatMessage, CompletionRequest, Decision, Role
from .base import RunState
from .rules import next_role

PROMPT = (
    "You coordinate a team of models solving a task. Roles: THINKER writes a plan, WORKER writes "
    "the answer, VERIFIER checks the latest answer (ACCEPT or REVISE).\n\nTask: {query}\n\n"
    "Turns so far:\n{summary}\n\nWhich role should act next? Reply with one word: THINKER, WORKER or VERIFIER."
)
REPLY_TOKENS = 8
_ROLE_WORD = re.compile(r"\b(thinker|worker|verifier)\b", re.I)


def summarize(state: RunState, width: int = 120) -> str:
    """One line per turn: number, role, model, verdict or error, and the start of the output."""
    if not state.turns:
        return "(none yet)"
    lines = []
    for t in state.turns:
        status = (t.error and f"ERROR {t.error[:60]}") or (t.verdict.value if t.verdict else "ok")
        text = " ".join(t.output.split())[:width]
        lines.append(f"{t.turn}. {t.role.value} ({t.model}) [{status}]: {text}")
    return "\n".join(lines)


def parse_role(text: str) -> Role | None:
    """The first role word in the reply, if any."""
    match = _ROLE_WORD.search(text)
    return Role(match.group(1).lower()) if match else None


class PromptedCoordinator:
    """Asks the pool's coordinator model for the next role; falls back to the rules when unusable."""

    name = "prompted"

    def __init__(self, model: str | None = None) -> None:
        self.model = model

    async def ask_model(self, state: RunState) -> str:
        spec = state.pool.get(self.model or state.pool.default_for("coordinator"))
        content = PROMPT.format(query=state.query, summary=summarize(state))
        request = CompletionRequest(
            messages=[ChatMessage(role="user", content=content)], max_tokens=REPLY_TOKENS, temperature=0.0
        )
        # the coordinator's call counts against the run's budgets and must fit its window, like any other
        completion = await state.call_model(spec, request)
        return completion.text

    async def decide(self, state: RunState) -> Decision:
        fallback_role, fallback_reason = next_role(state)
        try:
            reply = await self.ask_model(state)
        except (BackendError, PolicyError, BudgetExhausted) as exc:
            return self._decision(
                state, fallback_role, f"coordinator call failed ({exc}); rules fallback: {fallback_reason}"
            )
        role = parse_role(reply)
        if role is None:
            return self._decision(
                state,
                fallback_role,
                f"coordinator reply {reply.strip()[:40]!r} names no role; rules fallback: {fallback_reason}",
            )
        why = forbidden_role(role, state.has_answer, state.turns_left)
        if why is not None:  # a verifier falls back to the rules, a thinker becomes the worker
            instead = f"rules fallback: {fallback_reason}" if role == Role.VERIFIER else "worker instead"
            instead_role = fallback_role if role == Role.VERIFIER else Role.WORKER
            return self._decision(state, instead_role, f"coordinator chose {role.value} {why}; {instead}")
        return self._decision(state, role, f"coordinator model chose {role.value}")

    def _decision(self, state: RunState, role: Role, reason: str) -> Decision:
        return Decision(role=role, model=state.pool.pick(role), reason=reason)

"""The fixed recipe: think, work, verify; after REVISE, work again, then verify again."""

from __future__ import annotations

from ..types import Decision, Role
from .base import RunState


def next_role(state: RunState) -> tuple[Role, str]:
    """The rule-based next role and why: plan once, answer, check, and re-answer after REVISE."""
    last = state.last
    if last is None:
        if state.turns_left < 3:
            return Role.WORKER, "few turns available: answer directly"
        return Role.THINKER, "first turn: plan"
    if last.role == Role.WORKER and not last.error:
        return Role.VERIFIER, "check the new answer"
    if last.role == Role.VERIFIER and not last.error:
        return Role.WORKER, "verifier asked for a revision"
    if last.role == Role.THINKER or not state.has_answer:
        return Role.WORKER, "answer the task"
    return Role.VERIFIER, "retry the check"


class RulesCoordinator:
    """Thinker first, then worker, then verifier; back to the worker after REVISE."""

    name = "rules"

    async def decide(self, state: RunState) -> Decision:
        role, reason = next_role(state)
        return Decision(role=role, model=state.pool.default_or_none(role) or "", reason=reason)  # '': the engine adapts

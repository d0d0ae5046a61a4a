"""The coordinator protocol: given the state of a run, choose who acts next and in which role."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..backends.base import estimate_prompt_tokens
from ..errors import BudgetExhausted, ContextOverflow
from ..pool import ModelSpec, Pool
from ..types import Budget, ChatMessage, Completion, Decision, Role, Turn, Verdict

if TYPE_CHECKING:
    from ..backends import BackendSet


@dataclass
class RunState:
    """What a coordinator sees when it decides: the query, the allowed pool, the turns so far."""

    query: str
    pool: Pool
    budget: Budget
    turns: list[Turn] = field(default_factory=list)
    backends: BackendSet | None = None
    orchestration: list[Completion] = field(default_factory=list)

    def record_orchestration(self, completion: Completion) -> None:
        """Account a call the coordinator itself made (its tokens and cost are reported apart)."""
        self.orchestration.append(completion)

    @property
    def next_turn(self) -> int:
        return len(self.turns) + 1

    @property
    def turns_left(self) -> int:
        return self.budget.max_turns - len(self.turns)

    @property
    def used_tokens(self) -> int:
        """Prompt plus completion tokens of every call so far, the coordinator's included (what the token budget counts)."""
        return sum(t.prompt_tokens + t.completion_tokens for t in self.turns) + sum(
            c.prompt_tokens + c.completion_tokens for c in self.orchestration
        )

    @property
    def spent_usd(self) -> float:
        """Cost of every call so far, the coordinator's included (what the cost budget counts)."""
        return sum(t.cost_usd for t in self.turns) + sum(c.cost_usd for c in self.orchestration)

    def size_call(self, spec: ModelSpec, messages: list[ChatMessage], max_tokens: int) -> int:
        """The completion limit for a call to ``spec`` (at most ``max_tokens``), checked before it is made.

        The rule: the prompt (estimated at 4 characters a token) plus at least one completion token
        must fit the model's ``context_window``, else ContextOverflow (this model is skipped; a
        fallback may fit). The completion limit is cut to what is left of the window and of the token
        budget; if even that call's worst case (prompt plus full completion, at the model's prices)
        would overrun the token or cost budget, BudgetExhausted: the call is not made.
        """
        prompt = estimate_prompt_tokens(messages)
        room = spec.context_window - prompt
        if room < 1:
            raise ContextOverflow(
                f"the prompt (about {prompt} tokens) does not fit the context window of {spec.name} "
                f"({spec.context_window} tokens)"
            )
        max_tokens = min(max_tokens, room)
        b = self.budget
        if b.max_tokens is not None:
            left = b.max_tokens - self.used_tokens - prompt
            if left < 1:
                raise BudgetExhausted(
                    "max_tokens",
                    f"max_tokens: the next prompt ({prompt} tokens) does not fit the {b.max_tokens}-token budget",
                )
            max_tokens = min(max_tokens, left)
        if b.max_cost_usd is not None:
            left_usd = b.max_cost_usd - self.spent_usd
            worst = spec.cost(prompt, max_tokens)
            if worst > left_usd:
                raise BudgetExhausted(
                    "max_cost_usd",
                    f"max_cost_usd: a call to {spec.name} may cost ${worst:.6f}, only ${max(left_usd, 0):.6f} left",
                )
        return max_tokens

    @property
    def last(self) -> Turn | None:
        return self.turns[-1] if self.turns else None

    def last_of(self, role: Role) -> Turn | None:
        """The most recent successful turn in ``role``."""
        for t in reversed(self.turns):
            if t.role == role and t.error is None:
                return t
        return None

    @property
    def has_answer(self) -> bool:
        return self.last_of(Role.WORKER) is not None

    @property
    def last_verdict(self) -> Verdict | None:
        v = self.last_of(Role.VERIFIER)
        return v.verdict if v else None

    def failed_models(self) -> set[str]:
        """Models whose worker answer a verifier rejected, or whose call errored."""
        bad: set[str] = set()
        for i, t in enumerate(self.turns):
            if t.error:
                bad.add(t.model)
            if t.role == Role.VERIFIER and t.verdict == Verdict.REVISE:
                prior = [p for p in self.turns[:i] if p.role == Role.WORKER and p.error is None]
                if prior:
                    bad.add(prior[-1].model)
        return bad


@runtime_checkable
class Coordinator(Protocol):
    """Decides the next turn. ``name`` is recorded on every run."""

    name: str

    async def decide(self, state: RunState) -> Decision:
        """Return the role and model for turn ``state.next_turn``."""
        ...

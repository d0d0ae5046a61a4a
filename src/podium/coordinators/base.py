"""The coordinator protocol: given the state of a run, choose who acts next and in which role."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from podium.pool import Pool
from podium.types import Budget, Completion, Decision, Role, Turn, Verdict

if TYPE_CHECKING:
    from podium.backends import BackendSet


@dataclass
class RunState:
    """What a coordinator sees when it decides: the query, the allowed pool, the turns so far."""

    query: str
    pool: Pool
    budget: Budget
    turns: list[Turn] = field(default_factory=list)
    backends: "BackendSet | None" = None
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
        """Prompt plus completion tokens of the turns so far (what the token budget counts)."""
        return sum(t.prompt_tokens + t.completion_tokens for t in self.turns)

    @property
    def spent_usd(self) -> float:
        """Cost of the turns so far (what the cost budget counts)."""
        return sum(t.cost_usd for t in self.turns)

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

"""The coordinator protocol: given the state of a run, choose who acts next and in which role."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..backends.base import estimate_prompt_tokens
from ..errors import ContextOverflow
from ..pool import ModelSpec, Pool
from ..reliability import AllModelsFailed, Layers, ModelCall
from ..types import Budget, ChatMessage, Completion, CompletionRequest, Decision, Role, Turn, Usage, Verdict

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
    layers: Layers | None = None  # the run's reliable path to the models (retries, breakers, timeouts)
    deadline: float | None = None  # loop time at which the run's deadline_s runs out

    def record_orchestration(self, completion: Completion) -> None:
        """Account a call the coordinator itself made (its tokens and cost are reported apart)."""
        self.orchestration.append(completion)

    async def call_model(self, spec: ModelSpec, request: CompletionRequest) -> Completion:
        """A call the coordinator itself makes, through the same reliable path as the turns (retries,
        breaker, total timeout), sized to the budgets and accounted apart. BackendError if it failed."""
        if self.layers is None:
            from ..backends import BackendSet

            self.layers = Layers(self.backends or BackendSet())
        sized = request.model_copy(update={"max_tokens": self.size_call(spec, request.messages, request.max_tokens)})
        call = ModelCall(self.layers, [spec], sized, deadline=self.deadline)
        served = await call.run()
        if served is None:
            raise AllModelsFailed(call.context.errors)
        self.record_orchestration(served.completion)
        return served.completion

    @property
    def next_turn(self) -> int:
        return len(self.turns) + 1

    @property
    def turns_left(self) -> int:
        return self.budget.max_turns - len(self.turns)

    @property
    def usage(self) -> Usage:
        """Every call so far, the coordinator's included (what the token and cost budgets count)."""
        return Usage.total(self.turns).incr(Usage.total(self.orchestration))

    @property
    def used_tokens(self) -> int:
        """Prompt plus completion tokens of every call so far, the coordinator's included."""
        return self.usage.total_tokens

    @property
    def spent_usd(self) -> float:
        """Cost of every call so far, the coordinator's included."""
        return self.usage.cost_usd

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
        return self.budget.check_before_request(self.usage, spec.name, prompt, min(max_tokens, room), spec.cost)

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

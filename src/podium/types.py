"""Podium's own request/response and trace types. Backends, coordinators and the engine speak these."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from .errors import BudgetExhausted
from .ids import random_hex


class Role(str, Enum):
    """The three roles a pool model can take in a run (TRINITY)."""

    THINKER = "thinker"
    WORKER = "worker"
    VERIFIER = "verifier"


class Verdict(str, Enum):
    """A verifier's decision."""

    ACCEPT = "ACCEPT"
    REVISE = "REVISE"


class RunStatus(str, Enum):
    """How a run ended.

    ``accepted``: a verifier accepted the answer. ``answered``: the coordinator ended the run
    without verification (the ``fixed`` single-model baseline). ``max_turns``: the turn limit
    was reached. ``budget_exhausted``: a token, cost or time budget ran out (``reason`` says which).
    ``failed``: no usable answer, e.g. every model call failed.
    """

    ACCEPTED = "accepted"
    ANSWERED = "answered"
    MAX_TURNS = "max_turns"
    BUDGET_EXHAUSTED = "budget_exhausted"
    FAILED = "failed"


@dataclass(slots=True)
class Usage:
    """Tokens and cost of one or more model calls; what the token and cost budgets count.

    A plain dataclass, not a pydantic model: it is summed on every turn of every run.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def fields(self) -> dict[str, Any]:
        """The three fields, as keyword arguments for a Completion or a Turn."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": self.cost_usd,
        }

    def incr(self, other: Usage) -> Usage:
        """Add ``other`` to this usage in place; returns self."""
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost_usd += other.cost_usd
        return self

    def __add__(self, other: Usage) -> Usage:
        return Usage().incr(self).incr(other)

    @classmethod
    def total(cls, items: Iterable[Metered]) -> Usage:
        """The sum of the usage of ``items`` (completions, turns)."""
        usage = cls()
        for item in items:
            usage.prompt_tokens += item.prompt_tokens
            usage.completion_tokens += item.completion_tokens
            usage.cost_usd += item.cost_usd
        return usage


class Metered(Protocol):
    """Anything that carries the usage of a call: a Completion, a Turn."""

    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


class ChatMessage(BaseModel):
    """One chat message, as in the OpenAI API."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str


class CompletionRequest(BaseModel):
    """What a backend is asked to do."""

    messages: list[ChatMessage]
    max_tokens: int = 512
    temperature: float | None = None
    stop: list[str] | None = None
    structured: Literal["verdict"] | None = (
        None  # the reply must follow this protocol; backends that can constrain output do
    )
    response_format: dict[str, Any] | None = None  # OpenAI-style structured output (json_schema), where supported
    cache: bool | None = None  # response cache: True use it (even where the pool has none), False bypass, None: pool's
    passthrough: dict[str, Any] = Field(
        default_factory=dict
    )  # server pass-through: OpenAI fields sent as is (tools, ...)


class Completion(BaseModel):
    """A backend's answer, with accounting. ``cost_usd`` comes from the pool's prices."""

    text: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0
    usage_estimated: bool = False
    finish_reason: str | None = None
    tool_calls: list[dict[str, Any]] | None = None  # an OpenAI upstream's tool calls (server pass-through)
    cached: bool = False  # served from the response cache: nothing was spent (cost and tokens are 0)

    @property
    def usage(self) -> Usage:
        return Usage.total([self])


class StreamDelta(BaseModel):
    """One streamed piece. The last item of a stream has ``completion`` set (and empty text)."""

    text: str = ""
    completion: Completion | None = None


class Decision(BaseModel):
    """A coordinator's choice for the next turn.

    ``stop_after`` ends the run after this turn (used by the ``fixed`` baseline).
    ``instruction`` optionally focuses the chosen model (Conductor-style prompt).
    """

    role: Role
    model: str
    reason: str = ""
    stop_after: bool = False
    instruction: str | None = None


class Turn(BaseModel):
    """One step of a run, as recorded in the trace."""

    turn: int
    role: Role
    model: str
    provider: str | None = None
    region: str | None = None
    reason: str = ""
    messages: list[ChatMessage] = Field(default_factory=list)
    output: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    verdict: Verdict | None = None
    diagnosis: str | None = None
    error: str | None = None
    retries: int = 0
    fallback_from: str | None = None
    attempts: list[str] = Field(default_factory=list)
    usage_estimated: bool = False
    deployment: str | None = None  # which deployment of a model with ``deployments:`` answered (its name)
    # a worker's OpenAI tool calls (server: tools given to a tier's workers); payloads stay out of traces
    tool_calls: list[dict[str, Any]] | None = Field(default=None, exclude=True)
    # workflow runs only (conductor / topologies): which step, what it saw, nesting, wall-clock span
    step: str | None = None
    inputs: list[str] | None = None
    depth: int = 0
    started_at: float | None = None
    ended_at: float | None = None

    @property
    def usage(self) -> Usage:
        return Usage.total([self])

    def summary(self) -> dict[str, Any]:
        """The compact per-turn record used by ``--json`` and the API."""
        return {
            "turn": self.turn,
            "role": self.role.value,
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": round(self.cost_usd, 8),
            "latency_s": round(self.latency_s, 4),
            "verdict": self.verdict.value if self.verdict else None,
            "error": self.error,
            "retries": self.retries,
            "fallback_from": self.fallback_from,
            "attempts": list(self.attempts),
            "usage_estimated": self.usage_estimated,
            **({"deployment": self.deployment} if self.deployment else {}),
            **(
                {
                    "step": self.step,
                    "inputs": self.inputs,
                    "depth": self.depth,
                    "started_at": self.started_at,
                    "ended_at": self.ended_at,
                }
                if self.step is not None
                else {}
            ),
        }


class Budget(BaseModel):
    """Limits of one run. ``None`` means unlimited (``max_turns`` is always set)."""

    model_config = ConfigDict(extra="forbid")
    max_turns: int = Field(default=5, ge=1, le=100)
    max_tokens: int | None = Field(default=None, ge=1)
    max_cost_usd: float | None = Field(default=None, ge=0)
    deadline_s: float | None = Field(default=None, gt=0)

    def exhausted(self, used: Usage) -> str | None:
        """Why no further call may start after ``used`` (the token or cost limit is reached), else None."""
        if self.max_tokens is not None and used.total_tokens >= self.max_tokens:
            return f"max_tokens: {used.total_tokens} of {self.max_tokens} tokens used"
        if self.max_cost_usd is not None and used.cost_usd >= self.max_cost_usd:
            return f"max_cost_usd: ${used.cost_usd:.6f} of ${self.max_cost_usd} spent"
        return None

    def check_before_request(
        self, used: Usage, model: str, prompt_tokens: int, max_tokens: int, cost: Callable[[int, int], float]
    ) -> int:
        """The completion limit (at most ``max_tokens``) a call may have after ``used``, so that its
        worst case (the prompt plus a full completion, priced by ``cost``) fits the token and cost
        budgets; BudgetExhausted (the call must not be made) when even one token does not fit."""
        if self.max_tokens is not None:
            left = self.max_tokens - used.total_tokens - prompt_tokens
            if left < 1:
                raise BudgetExhausted(
                    "max_tokens",
                    f"max_tokens: the next prompt ({prompt_tokens} tokens) does not fit the {self.max_tokens}-token budget",
                )
            max_tokens = min(max_tokens, left)
        if self.max_cost_usd is not None:
            left_usd = self.max_cost_usd - used.cost_usd
            worst = cost(prompt_tokens, max_tokens)
            if worst > left_usd:
                raise BudgetExhausted(
                    "max_cost_usd",
                    f"max_cost_usd: a call to {model} may cost ${worst:.6f}, only ${max(left_usd, 0):.6f} left",
                )
        return max_tokens


def new_run_id() -> str:
    """A sortable unique run id."""
    return f"run_{int(time.time() * 1000):x}_{random_hex(8)}"


class RunResult(BaseModel):
    """Everything a run produced: the answer, how it ended, and the full trace."""

    run_id: str = Field(default_factory=new_run_id)
    query: str
    answer: str | None = None
    status: RunStatus
    reason: str = ""
    pool: str = ""
    coordinator: str = ""
    policy: dict[str, Any] = Field(default_factory=dict)
    started_at: float = Field(default_factory=time.time)
    latency_s: float = 0.0
    turns: list[Turn] = Field(default_factory=list)
    orchestration_prompt_tokens: int = 0
    orchestration_completion_tokens: int = 0
    orchestration_cost_usd: float = 0.0
    workflow: dict[str, Any] | None = None  # workflow runs: the plan(s) that ran (see podium.workflows)

    @property
    def usage(self) -> Usage:
        """What the role turns consumed (the coordinator's own calls apart: :attr:`orchestration_usage`)."""
        return Usage.total(self.turns)

    @property
    def orchestration_usage(self) -> Usage:
        return Usage(
            prompt_tokens=self.orchestration_prompt_tokens,
            completion_tokens=self.orchestration_completion_tokens,
            cost_usd=self.orchestration_cost_usd,
        )

    @orchestration_usage.setter
    def orchestration_usage(self, usage: Usage) -> None:
        self.orchestration_prompt_tokens = usage.prompt_tokens
        self.orchestration_completion_tokens = usage.completion_tokens
        self.orchestration_cost_usd = usage.cost_usd

    @property
    def total_tokens(self) -> int:
        return self.usage.total_tokens

    @property
    def cost_usd(self) -> float:
        return self.usage.cost_usd

    def to_json(self) -> dict[str, Any]:
        """The JSON object ``podium ask --json`` prints."""
        return {
            "trace_id": self.run_id,
            "answer": self.answer,
            "status": self.status.value,
            "reason": self.reason,
            "pool": self.pool,
            "coordinator": self.coordinator,
            "total_tokens": self.total_tokens,
            "cost_usd": round(self.cost_usd, 8),
            "orchestration_tokens": self.orchestration_usage.total_tokens,
            "orchestration_cost_usd": round(self.orchestration_cost_usd, 8),
            "latency_s": round(self.latency_s, 4),
            "turns": [t.summary() for t in self.turns],
            **({"workflow": self.workflow} if self.workflow is not None else {}),
        }

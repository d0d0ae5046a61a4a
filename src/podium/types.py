"""Podium's own request/response and trace types. Backends, coordinators and the engine speak these."""

from __future__ import annotations

import time
import uuid
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


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
    response_format: dict | None = None  # OpenAI-style structured output (json_schema), where a backend supports it
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
    # workflow runs only (conductor / topologies): which step, what it saw, nesting, wall-clock span
    step: str | None = None
    inputs: list[str] | None = None
    depth: int = 0
    started_at: float | None = None
    ended_at: float | None = None

    def summary(self) -> dict:
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


def new_run_id() -> str:
    """A sortable unique run id."""
    return f"run_{int(time.time() * 1000):x}_{uuid.uuid4().hex[:8]}"


class RunResult(BaseModel):
    """Everything a run produced: the answer, how it ended, and the full trace."""

    run_id: str = Field(default_factory=new_run_id)
    query: str
    answer: str | None = None
    status: RunStatus
    reason: str = ""
    pool: str = ""
    coordinator: str = ""
    policy: dict = Field(default_factory=dict)
    started_at: float = Field(default_factory=time.time)
    latency_s: float = 0.0
    turns: list[Turn] = Field(default_factory=list)
    orchestration_prompt_tokens: int = 0
    orchestration_completion_tokens: int = 0
    orchestration_cost_usd: float = 0.0
    workflow: dict | None = None  # workflow runs: the plan(s) that ran (see podium.workflows)

    @property
    def total_tokens(self) -> int:
        return sum(t.prompt_tokens + t.completion_tokens for t in self.turns)

    @property
    def cost_usd(self) -> float:
        return sum(t.cost_usd for t in self.turns)

    def to_json(self) -> dict:
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
            "orchestration_tokens": self.orchestration_prompt_tokens + self.orchestration_completion_tokens,
            "orchestration_cost_usd": round(self.orchestration_cost_usd, 8),
            "latency_s": round(self.latency_s, 4),
            "turns": [t.summary() for t in self.turns],
            **({"workflow": self.workflow} if self.workflow is not None else {}),
        }

"""A chat request's plan (target, merged policy, budget) and a plan's outcome; the helpers that build
them from the request (:meth:`podium.server.service.Service.plan`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..events import EngineRun, Runner
from ..pool import ModelSpec, Policy
from ..types import Budget, ChatMessage, Role, RunResult, RunStatus, new_run_id
from .auth import ApiKey
from .errors import ApiError, bad_request
from .schemas import ChatCompletionRequest
from .tiers import Tier

LABELS = {"system": "Instructions", "user": "User", "assistant": "Assistant"}


@dataclass
class Plan:
    """A validated request, ready to run."""

    request: ChatCompletionRequest
    key: ApiKey
    policy: Policy
    tier: Tier | None = None
    spec: ModelSpec | None = None
    budget: Budget | None = None
    query: str = ""
    chain: list[str] = field(default_factory=list)
    trace_id: str = field(default_factory=new_run_id)
    cost_weight: float | None = None  # learned tiers: the request's cost knob (body or ``TIER@W`` model name)
    chats: list[ChatMessage] | None = None  # the request's messages as podium sees them (:meth:`chat_messages`)

    def chat_messages(self) -> list[ChatMessage]:
        """The request's messages as podium sees them (``to_chat``), made once per request."""
        if self.chats is None:
            self.chats = [m.to_chat() for m in self.request.messages]
        return self.chats

    @property
    def model(self) -> str:
        return self.request.model

    @property
    def kind(self) -> str:
        return "tier" if self.tier else "model"


@dataclass
class Outcome:
    """A finished run and the finish reason to report."""

    result: RunResult
    finish_reason: str = "stop"
    tool_calls: list[dict[str, Any]] | None = None  # a pass-through model's tool calls (podium.server.compat)


@dataclass
class Upstream:
    """What a pass-through's model said besides its text: its own finish reason and tool calls."""

    finish: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class PlanRun(EngineRun):
    """A plan's run in progress (:meth:`Service.iter`); ``outcome`` once it has finished.

    A pass-through's runner fills ``upstream``, which it shares with the run instead of holding the
    run itself: a runner that refers to its run makes a reference cycle, and every request's objects
    would then wait for the garbage collector instead of being freed when the request ends."""

    def __init__(self, runner: Runner, upstream: Upstream | None = None) -> None:
        super().__init__(runner)
        self.upstream = upstream or Upstream()

    @property
    def outcome(self) -> Outcome | None:
        if self.result is None:
            return None
        calls = self.upstream.tool_calls or answer_tool_calls(self.result)
        finish = "tool_calls" if calls else self.upstream.finish or finish_reason(self.result)
        return Outcome(self.result, finish, calls)


def answer_tool_calls(result: RunResult) -> list[dict[str, Any]] | None:
    """A tier's tool calls: those of the worker turn that ended the run (the client runs them)."""
    last = next((t for t in reversed(result.turns) if t.role == Role.WORKER and not t.error), None)
    return last.tool_calls if last is not None and result.status == RunStatus.ANSWERED else None


def render_query(messages: list[ChatMessage]) -> str:
    """The task text a tier orchestrates: a lone message as is, a conversation as a labelled transcript."""
    chats = [m for m in messages if m.content.strip()]
    if not any(m.role == "user" for m in chats):
        raise bad_request(
            "messages must contain at least one non-empty user message", param="messages", code="empty_messages"
        )
    if len(chats) == 1:
        return chats[0].content
    return "\n\n".join(f"{LABELS[m.role]}: {m.content}" for m in chats)


def finish_reason(result: RunResult) -> str:
    return "stop" if result.status in (RunStatus.ACCEPTED, RunStatus.ANSWERED) else "length"


def model_not_found(name: str) -> ApiError:
    return ApiError(
        404,
        f"model '{name}' does not exist; GET /v1/models lists the tiers and models served",
        param="model",
        code="model_not_found",
    )


def least(*values: float | None) -> float | None:
    """The smallest of the limits that are set (None: no limit)."""
    present = [v for v in values if v is not None]
    return min(present) if present else None


def narrow(name: str, tier_value: Any, asked: Any, tier: str) -> Any:
    """The request's value if it is within the tier's limit; ApiError if it would widen it."""
    if asked is None:
        return tier_value
    if tier_value is not None and asked > tier_value:
        raise bad_request(
            f"podium.{name} {asked} exceeds tier '{tier}''s limit of {tier_value}; a request may only narrow it",
            param=f"podium.{name}",
            code="policy_widening",
        )
    return asked

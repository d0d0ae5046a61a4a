"""Responses and server-sent events: OpenAI bodies from a run, and which streamed text is the answer.

A tier run streams every turn (plan, answers, verdicts), but only the final answer may reach the
client. :class:`AnswerGate` decides, per worker turn:

- a worker turn that is the run's last possible turn streams **live**: nothing can come after it,
  so its tokens are the answer as they are produced; in a workflow run (conductor, topologies)
  the step announced as ``final`` streams live instead;
- any other worker turn is **held** (its deltas are buffered). When the run ends (a verifier's
  ACCEPT, or a budget), the deltas of the turn that produced the final answer are released, in
  their original pieces. Rejected drafts, plans and verdicts are never sent.

While text is held the stream sends SSE comments (``: podium turn 2 worker solver``), which
clients ignore, so proxies see a live connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any

from ..engine import Event, RunFinished, TurnDelta, TurnStarted
from ..scrub import scrub_value
from ..types import Role, RunResult, RunStatus
from .schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChunkChoice,
    Delta,
    ResponseMessage,
    Usage,
)
from .service import Outcome, Plan

log = logging.getLogger("podium.server")
PIECE = 16


def usage(result: RunResult) -> Usage:
    """All role turns as prompt/completion tokens; the coordinator's own calls apart."""
    p = sum(t.prompt_tokens for t in result.turns)
    c = sum(t.completion_tokens for t in result.turns)
    oi, oo = result.orchestration_prompt_tokens, result.orchestration_completion_tokens
    return Usage(
        prompt_tokens=p,
        completion_tokens=c,
        total_tokens=p + c,
        orchestration_input_tokens=oi,
        orchestration_output_tokens=oo,
        orchestration_total_tokens=oi + oo,
        cost_usd=round(result.cost_usd, 8),
        orchestration_cost_usd=round(result.orchestration_cost_usd, 8),
        estimated=any(t.usage_estimated for t in result.turns),
    )


def podium_info(plan: Plan, result: RunResult) -> dict[str, Any]:
    """The ``podium`` object of a response: trace id, how the run ended, per-turn accounting."""
    return {
        "trace_id": result.run_id,
        "kind": plan.kind,
        "status": result.status.value,
        "reason": result.reason,
        "coordinator": result.coordinator,
        "turns": [t.summary() for t in result.turns],
    }


def completion_body(plan: Plan, outcome: Outcome, response_id: str) -> dict[str, Any]:
    result = outcome.result
    choice = Choice(message=ResponseMessage(content=result.answer or ""), finish_reason=outcome.finish_reason)  # type: ignore[arg-type]
    body = ChatCompletion(
        id=response_id, model=plan.model, choices=[choice], usage=usage(result), podium=podium_info(plan, result)
    )
    return body.model_dump(mode="json")


def pieces(text: str, size: int = PIECE) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


class AnswerGate:
    """Turns a tier's engine events into answer text (see the module doc), via ``put``."""

    def __init__(self, queue: asyncio.Queue, max_turns: int, workflow: bool = False) -> None:
        self.queue = queue
        self.max_turns = max_turns
        self.workflow = workflow
        self.live = False
        self.held: dict[int, list[str]] = {}
        self.sent = ""

    def on_event(self, event: Event) -> None:
        if isinstance(event, TurnStarted):
            self.queue.put_nowait(("comment", f"podium turn {event.turn} {event.role.value} {event.model}"))
            if event.role == Role.WORKER:
                self.live = event.final if self.workflow else event.turn >= self.max_turns
                self.held[event.turn] = []
        elif isinstance(event, TurnDelta) and event.role == Role.WORKER:
            if self.live:
                self.sent += event.text
                self.queue.put_nowait(("text", event.text))
            else:
                self.held.setdefault(event.turn, []).append(event.text)
        elif isinstance(event, RunFinished):
            self.release(event.result)

    def release(self, result: RunResult) -> None:
        """Send whatever of the final answer the client does not have yet."""
        answer = result.answer or ""
        if self.sent:
            if answer.startswith(self.sent):
                for piece in pieces(answer[len(self.sent) :]):
                    self.queue.put_nowait(("text", piece))
            else:
                log.warning("run %s: live-streamed text differs from the final answer", result.run_id)
            return
        source = next((t for t in reversed(result.turns) if t.role == Role.WORKER and not t.error), None)
        held = self.held.get(source.turn, []) if source else []
        for piece in held if "".join(held) == answer else pieces(answer):
            self.queue.put_nowait(("text", piece))


class EventStream:
    """Formats one streaming response as SSE lines."""

    def __init__(self, plan: Plan, response_id: str) -> None:
        self.plan = plan
        self.id = response_id
        self.created = int(time.time())

    def chunk(self, delta: Delta, finish: str | None = None, **extra: Any) -> str:
        choices = [ChunkChoice(delta=delta, finish_reason=finish)] if extra.get("usage") is None else []  # type: ignore[arg-type]
        body = ChatCompletionChunk(id=self.id, created=self.created, model=self.plan.model, choices=choices, **extra)
        return (
            f"data: {json.dumps(scrub_value(body.model_dump(mode='json', exclude_none=True)), ensure_ascii=False)}\n\n"
        )

    def head(self) -> str:
        return self.chunk(Delta(role="assistant", content=""))

    def text(self, text: str) -> str:
        return self.chunk(Delta(content=text))

    def tail(self, outcome: Outcome) -> list[str]:
        """The closing chunks: finish reason (with podium info), usage if asked, ``[DONE]``."""
        result = outcome.result
        lines = [self.chunk(Delta(), outcome.finish_reason, podium=podium_info(self.plan, result))]
        if self.plan.request.include_usage:
            lines.append(self.chunk(Delta(), usage=usage(result)))
        return [*lines, "data: [DONE]\n\n"]

    @staticmethod
    def error(message: str, code: str, trace_id: str) -> str:
        body = {
            "error": {"message": message, "type": "upstream_error", "param": None, "code": code},
            "trace_id": trace_id,
        }
        return f"data: {json.dumps(scrub_value(body), ensure_ascii=False)}\n\n"


_stopped: weakref.WeakSet[asyncio.Task] = weakref.WeakSet()


def stop_run(task: asyncio.Task) -> None:
    """Cancel a streaming run's task, once however often asked: a second cancellation could cut its
    cleanup (storing the trace) short."""
    if not task.done() and task not in _stopped:
        _stopped.add(task)
        task.cancel()


async def sse(stream: EventStream, queue: asyncio.Queue, task: asyncio.Task) -> AsyncIterator[str]:
    """Drain ``queue`` (``text`` / ``comment`` / ``done`` items) into SSE; cancel ``task`` if the client goes."""
    try:
        yield stream.head()
        while True:
            kind, value = await queue.get()
            if kind == "text" and value:
                yield stream.text(value)
            elif kind == "comment":
                yield f": {value}\n\n"
            elif kind == "error":
                yield stream.error(value, "server_error", stream.plan.trace_id)
                return
            elif kind == "done":
                break
        outcome: Outcome = value
        if outcome.result.status == RunStatus.FAILED and not outcome.result.answer:
            yield stream.error(f"the run failed: {outcome.result.reason}", "run_failed", outcome.result.run_id)
            return
        for line in stream.tail(outcome):
            yield line
    finally:
        if not task.done():
            # Cancel the run once, then wait for its cleanup (closing upstream responses, storing the
            # trace) through a shield: Starlette keeps re-cancelling us after a disconnect, and a
            # cancellation passed on to the run again would interrupt that cleanup midway.
            stop_run(task)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)

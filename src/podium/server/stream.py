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

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..events import EngineRun, Event, RunFinished, TurnDelta, TurnStarted
from ..scrub import scrub_value
from ..types import Role, RunResult, RunStatus
from .errors import ApiError
from .plan import Outcome, Plan, PlanRun
from .schemas import (
    ChatCompletionChunk,
    ChunkChoice,
    Delta,
    Usage,
    completion_id,
)
from .service import Service
from .speculative import SpeculativeGate

if TYPE_CHECKING:
    from .metrics import Metrics
    from .traces import Traces

try:
    from fastapi.responses import StreamingResponse
except ImportError:  # pragma: no cover - the server extra is checked by app.py first
    StreamingResponse = None  # type: ignore[assignment,misc]

log = logging.getLogger("podium.server")
PIECE = 16


def usage(result: RunResult) -> Usage:
    """All role turns as prompt/completion tokens; the coordinator's own calls apart."""
    return Usage(**usage_fields(result))


def usage_fields(result: RunResult) -> dict[str, Any]:
    """:func:`usage`'s fields as :class:`Usage` dumps them (``cost`` filled in as its validator does)."""
    turns, orch = result.usage, result.orchestration_usage
    cost_usd, orchestration_cost_usd = round(turns.cost_usd, 8), round(orch.cost_usd, 8)
    return {
        "prompt_tokens": turns.prompt_tokens,
        "completion_tokens": turns.completion_tokens,
        "total_tokens": turns.total_tokens,
        "orchestration_input_tokens": orch.prompt_tokens,
        "orchestration_output_tokens": orch.completion_tokens,
        "orchestration_total_tokens": orch.total_tokens,
        "cost_usd": cost_usd,
        "orchestration_cost_usd": orchestration_cost_usd,
        "cost": round(cost_usd + orchestration_cost_usd, 8),
        "estimated": any(t.usage_estimated for t in result.turns),
    }


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
    """The run's :class:`~podium.server.schemas.ChatCompletion` as its ``model_dump(mode="json")``: built
    as that dict, without four models and their dump on every answer (a test keeps the two equal)."""
    result = outcome.result
    message = {"role": "assistant", "content": result.answer or "", "refusal": None, "tool_calls": None}
    return {
        "id": response_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": plan.model,
        "choices": [{"index": 0, "message": message, "finish_reason": outcome.finish_reason, "logprobs": None}],
        "usage": usage_fields(result),
        "system_fingerprint": None,
        "podium": podium_info(plan, result),
    }


def pieces(text: str, size: int = PIECE) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


Item = tuple[str, str]  # ("text", piece) for the client, or ("comment", line) to keep the connection alive


class AnswerGate:
    """Turns a run's events into answer text (see the module doc): :meth:`on_event` returns what to send."""

    def __init__(self, max_turns: int, workflow: bool = False, comments: bool = True) -> None:
        self.max_turns = max_turns
        self.workflow = workflow
        self.comments = comments
        self.live = False
        self.held: dict[int, list[str]] = {}
        self.sent = ""

    def on_event(self, event: Event) -> list[Item]:
        if isinstance(event, TurnStarted):
            if event.role == Role.WORKER:
                self.live = event.final if self.workflow else event.turn >= self.max_turns
                self.held[event.turn] = []
            return [("comment", f"podium turn {event.turn} {event.role.value} {event.model}")] if self.comments else []
        if isinstance(event, TurnDelta) and event.role == Role.WORKER:
            if self.live:
                self.sent += event.text
                return [("text", event.text)]
            self.held.setdefault(event.turn, []).append(event.text)
        elif isinstance(event, RunFinished):
            return [("text", piece) for piece in self.release(event.result)]
        return []

    def release(self, result: RunResult) -> list[str]:
        """Whatever of the final answer the client does not have yet, in pieces."""
        answer = result.answer or ""
        if self.sent:
            if answer.startswith(self.sent):
                return pieces(answer[len(self.sent) :])
            log.warning("run %s: live-streamed text differs from the final answer", result.run_id)
            return []
        source = next((t for t in reversed(result.turns) if t.role == Role.WORKER and not t.error), None)
        held = self.held.get(source.turn, []) if source else []
        return held if "".join(held) == answer else pieces(answer)


class EventStream:
    """Formats one streaming response as SSE lines."""

    def __init__(self, plan: Plan, response_id: str) -> None:
        self.plan = plan
        self.id = response_id
        self.created = int(time.time())
        self.model = plan.model  # a pass-through's chunks: the model that answered (see :meth:`serve`)
        self.opened = False  # whether the head (the role chunk) was sent

    def serve(self, event: Event) -> None:
        """Follow which model answers a pass-through, so its chunks carry it (as the plain response's
        ``model`` does); a tier's chunks carry the tier's name."""
        if self.plan.tier is not None:
            return
        if isinstance(event, TurnDelta) and event.role == Role.WORKER:
            self.model = event.model
        elif isinstance(event, RunFinished):
            last = next((t for t in reversed(event.result.turns) if t.role == Role.WORKER and not t.error), None)
            self.model = last.model if last is not None else self.model

    def open(self) -> list[str]:
        """The head if not sent yet: a tier's at once, a pass-through's with its first text (it names the
        model that answered, known only then)."""
        if self.opened:
            return []
        self.opened = True
        return [self.head()]

    def chunk(self, delta: Delta, finish: str | None = None, **extra: Any) -> str:
        choices = [ChunkChoice(delta=delta, finish_reason=finish)] if extra.get("usage") is None else []  # type: ignore[arg-type]
        body = ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=choices, **extra)
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
        lines = self.open()
        if outcome.tool_calls:  # whole, after the model finished (tool calls are not streamed upstream)
            lines.append(self.chunk(Delta(tool_calls=[{"index": i, **c} for i, c in enumerate(outcome.tool_calls)])))
        lines.append(self.chunk(Delta(), outcome.finish_reason, podium=podium_info(self.plan, result)))
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


def record_finished(plan: Plan, result: RunResult, store: Traces, metrics: Metrics, started: float) -> Awaitable[None]:
    """Account a finished run (metrics: the run, the request with 200, or 502 without an answer) and
    store its trace; the returned awaitable is the store write."""
    metrics.run(plan.model, result)
    status = 200 if result.answer is not None else 502
    metrics.request(plan.model, plan.kind, status, time.perf_counter() - started)
    return store.record(result, plan.key.name)


def stream_response(
    plan: Plan,
    service: Service,
    store: Traces,
    metrics: Metrics,
    started: float,
    on_finished: Callable[[RunResult], None] | None = None,
    fields: dict[str, Any] | None = None,
) -> StreamingResponse:
    """Stream the plan's run as SSE chunks. A client that disconnects stops the run; what it did so
    far is stored with status ``interrupted``. ``on_finished`` sees the run when it ends (key accounting)."""
    stream = EventStream(plan, completion_id())
    headers = {"x-podium-trace-id": plan.trace_id, "cache-control": "no-cache"}
    runs: list[EngineRun] = []
    recorded: list[bool] = []  # once the run went to the store (at its end, or cancelled)
    lines = sse(stream, service, store, metrics, started, runs, on_finished, fields, recorded=recorded)

    def store_unsent() -> None:
        # A run can finish as its client hangs up: a tier's answer is released at the run's end, so the
        # response can end at that chunk and the generator never reaches finish(). Stored here instead.
        result = runs[0].result if runs else None
        if result is not None and not recorded:
            recorded.append(True)
            store.record_now(result, plan.key.name)
            metrics.request(plan.model, plan.kind, 499, time.perf_counter() - started)

    return RunStream(lines, runs, store_unsent, media_type="text/event-stream", headers=headers)


class RunStream(StreamingResponse):
    """A streamed run's response: however the response ends (finished, client gone before the first
    chunk or between two), the run does not outlive it."""

    def __init__(
        self, content: AsyncIterator[str], runs: list[EngineRun], on_end: Callable[[], None], **kwargs: Any
    ) -> None:
        super().__init__(content, **kwargs)
        self.runs = runs
        self.on_end = on_end  # after the response, however it ended: stores a finished run not yet stored

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            for run in self.runs:
                run.stop()  # synchronous: Starlette may be cancelling us again
            self.on_end()


async def sse(
    stream: EventStream,
    service: Service,
    store: Traces,
    metrics: Metrics,
    started: float,
    runs: list[EngineRun],
    on_finished: Callable[[RunResult], None] | None = None,
    fields: dict[str, Any] | None = None,
    *,
    recorded: list[bool],
) -> AsyncIterator[str]:
    """The SSE lines of one streamed run: the head, the answer as the gate releases it, the tail.
    ``recorded`` gets an entry once the run has gone to the store."""
    plan = stream.plan
    first = True

    def on_cancel(result: RunResult) -> None:
        recorded.append(True)
        store.record_now(result, plan.key.name)
        metrics.request(plan.model, plan.kind, 499, time.perf_counter() - started)

    if plan.tier is not None:
        for line in stream.open():
            yield line
    try:
        run = service.iter(plan, stream=True, on_cancel=on_cancel)
        runs.append(run)
        gate = answer_gate(service, plan)
        async with run:
            async for event in run:
                stream.serve(event)
                for kind, value in gate.on_event(event):
                    if kind == "comment":
                        yield f": {value}\n\n"
                    elif value:
                        if first:  # the time to the first token of the answer the client sees
                            first = False
                            first_token(metrics, plan, time.perf_counter() - started, fields)
                        for line in [*stream.open(), stream.text(value)]:
                            yield line
    except ApiError as err:
        yield "".join([*stream.open(), stream.error(err.message, "server_error", plan.trace_id)])
        return
    except UsageError as err:  # a config problem found mid-run
        yield "".join([*stream.open(), stream.error(str(err), "server_error", plan.trace_id)])
        return
    except Exception as exc:  # the client gets an error event, never a dead stream
        log.exception("streaming run failed")
        yield "".join(
            [*stream.open(), stream.error(f"internal error: {type(exc).__name__}", "server_error", plan.trace_id)]
        )
        return
    recorded.append(True)  # finish() hands the run to the store before its first suspension
    for line in await finish(stream, run, store, metrics, started, on_finished):
        yield line


def answer_gate(service: Service, plan: Plan) -> AnswerGate | SpeculativeGate:
    """The gate that releases the run's answer text (and, on tiers, progress comments) to the client."""
    workflow = plan.tier is not None and getattr(service.engines[plan.tier.name].coordinator, "plans_workflows", False)
    if plan.tier is not None and plan.tier.speculative and not workflow:
        return SpeculativeGate()
    max_turns = plan.budget.max_turns if plan.budget is not None else 1
    return AnswerGate(max_turns, workflow, comments=plan.tier is not None)


def first_token(metrics: Metrics, plan: Plan, ttft: float, fields: dict[str, Any] | None) -> None:
    """Count the time to the first answer text sent, in the metrics and the request log's line."""
    metrics.first_token(plan.model, plan.kind, ttft)
    if fields is not None:  # the request log's line
        fields["ttft_ms"] = round(ttft * 1000, 1)


async def finish(
    stream: EventStream,
    run: PlanRun,
    store: Traces,
    metrics: Metrics,
    started: float,
    on_finished: Callable[[RunResult], None] | None,
) -> list[str]:
    """Record the finished run; the stream's last lines (its tail, or an error event if it failed)."""
    plan = stream.plan
    outcome = run.outcome
    assert outcome is not None
    if on_finished is not None:
        on_finished(outcome.result)
    await record_finished(plan, outcome.result, store, metrics, started)
    if outcome.result.status == RunStatus.FAILED and not outcome.result.answer:
        return [
            *stream.open(),
            stream.error(f"the run failed: {outcome.result.reason}", "run_failed", outcome.result.run_id),
        ]
    return list(stream.tail(outcome))

"""Answering a planned request: a run to one chat.completion, or streamed as SSE chunks; model cards."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ..errors import missing_extra
from ..pool import ModelSpec
from ..types import RunResult
from .accounting import identity_headers
from .compat import ignored_fields
from .edges import Receive, Scope, Send
from .errors import ApiError
from .keyguard import KeyGuard
from .metrics import Metrics
from .middleware import ScrubbedJSON, error_response
from .outcomes import breakers_wait, failed_run_error
from .requestlog import run_fields
from .schemas import ModelCard, completion_id
from .service import Plan, Service
from .stream import AnswerGate, EventStream, completion_body, sse, stop_run
from .tiers import Tier
from .traces import Traces

try:
    from fastapi.responses import JSONResponse, StreamingResponse
except ImportError:  # pragma: no cover - exercised only without the extra
    raise missing_extra("fastapi", "server") from None

log = logging.getLogger("podium.server")


async def complete(
    plan: Plan,
    service: Service,
    store: Traces,
    metrics: Metrics,
    started: float,
    guard: KeyGuard,
    fields: dict[str, Any],
) -> JSONResponse:
    """Run a plan to the end and answer with one chat.completion (502 if it produced nothing)."""
    specs = [service.pool.config_model(n) for n in ([] if plan.tier else plan.chain)]
    breakers = [service.breakers.get(s) for s in specs if s is not None]
    open_before = breakers_wait(breakers) is not None  # refused by open circuits, not failed on its own
    outcome = await (service.run_tier(plan) if plan.tier else service.run_model(plan))
    result = outcome.result
    await store.record(result, plan.key.name)
    guard.account(plan.key.name, result)
    metrics.run(plan.model, result)
    fields.update(run_fields(result))
    headers = {"x-podium-trace-id": result.run_id}
    if result.answer is None:
        wait = breakers_wait(breakers) if open_before else None
        err = failed_run_error(result, headers, wait)
        metrics.request(plan.model, plan.kind, err.status, time.perf_counter() - started)
        return error_response(err)
    metrics.request(plan.model, plan.kind, 200, time.perf_counter() - started)
    headers |= identity_headers(result)
    body = completion_body(plan, outcome, completion_id())
    if plan.tier is None and headers.get("x-podium-served-model"):
        body["model"] = headers["x-podium-served-model"]  # the model that answered, a fallback included
    body["podium"]["served_model"] = headers.get("x-podium-served-model")
    if outcome.tool_calls:
        body["choices"][0]["message"].update(tool_calls=outcome.tool_calls, content=result.answer or None)
    ignored = ignored_fields(plan.request, plan.tier is not None)
    if ignored:
        body["podium"]["ignored"] = ignored
    return ScrubbedJSON(body, headers=headers)


_producers: set[asyncio.Task[None]] = set()  # the loop holds tasks weakly; a producer must outlive its client


def stream_response(
    plan: Plan,
    service: Service,
    store: Traces,
    metrics: Metrics,
    started: float,
    guard: KeyGuard,
    fields: dict[str, Any],
) -> StreamingResponse:
    """Start the run in a task and stream its answer as SSE chunks. A client that disconnects cancels
    the run; what it did so far is stored with status ``interrupted``."""

    def first_text() -> None:
        ttft = time.perf_counter() - started
        metrics.first_token(plan.model, plan.kind, ttft)
        fields["ttft_ms"] = round(ttft * 1000, 1)

    queue = FirstTextQueue(first_text)

    def on_cancel(result: RunResult) -> None:
        store.record_now(result, plan.key.name)
        metrics.request(plan.model, plan.kind, 499, time.perf_counter() - started)

    async def produce() -> None:
        metrics.in_flight.inc()
        try:
            await run()
        finally:
            metrics.in_flight.dec()

    async def run() -> None:
        try:
            if plan.tier:
                workflow = getattr(service.engines[plan.tier.name].coordinator, "plans_workflows", False)
                gate = AnswerGate(queue, plan.budget.max_turns, workflow)  # type: ignore[union-attr]
                outcome = await service.run_tier(plan, gate.on_event, on_cancel=on_cancel)
            else:
                outcome = await service.run_model(
                    plan, sink=lambda text: queue.put_nowait(("text", text)), on_cancel=on_cancel
                )
        except ApiError as err:
            queue.put_nowait(("error", err.message))
            return
        except Exception as exc:  # never leave the client waiting on a dead producer
            log.exception("streaming run failed")
            queue.put_nowait(("error", f"internal error: {type(exc).__name__}"))
            return
        await store.record(outcome.result, plan.key.name)
        guard.account(plan.key.name, outcome.result)
        metrics.run(plan.model, outcome.result)
        fields.update(run_fields(outcome.result))
        status = 200 if outcome.result.answer is not None else 502
        metrics.request(plan.model, plan.kind, status, time.perf_counter() - started)
        queue.put_nowait(("done", outcome))

    task = asyncio.get_running_loop().create_task(produce())
    _producers.add(task)
    task.add_done_callback(_producers.discard)
    stream = EventStream(plan, completion_id())
    headers = {"x-podium-trace-id": plan.trace_id, "cache-control": "no-cache"}
    return RunStream(sse(stream, queue, task), task, media_type="text/event-stream", headers=headers)


class FirstTextQueue(asyncio.Queue):  # type: ignore[type-arg]
    """The queue of a streamed run's SSE items; calls ``on_first`` when the first answer text is put
    (released to the client): the time to first token."""

    def __init__(self, on_first: Any) -> None:
        super().__init__()
        self.on_first: Any = on_first

    def put_nowait(self, item: Any) -> None:
        if self.on_first is not None and item[0] == "text" and item[1]:
            self.on_first, on_first = None, self.on_first
            on_first()
        super().put_nowait(item)


class RunStream(StreamingResponse):
    """A streamed run's response: however the response ends (finished, client gone before the first
    chunk), the run does not outlive it."""

    def __init__(self, content: Any, task: asyncio.Task[None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.task = task

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            stop_run(self.task)


def tier_card(t: Tier) -> ModelCard:
    """A tier as an OpenAI model object (``podium`` holds what it is)."""
    info = {"kind": "tier", "description": t.description, "max_turns": t.max_turns, "coordinator": t.coordinator}
    return ModelCard(id=t.name, owned_by="podium", podium={**info, "always_verify": t.always_verify})


def model_card(m: ModelSpec) -> ModelCard:
    """A pool model as an OpenAI model object, with OpenRouter-style ``context_length`` and ``pricing``
    (USD per token, as strings) next to podium's own fields."""
    info: dict[str, Any] = {"kind": "model", "region": m.region, "provider": m.provider_name, "roles": m.roles}
    info |= {"input_usd_per_mtok": m.input_usd_per_mtok, "output_usd_per_mtok": m.output_usd_per_mtok}
    info |= {"context_window": m.context_window, "max_tokens": m.max_tokens}
    pricing = {"prompt": f"{m.input_usd_per_mtok / 1e6:.12g}", "completion": f"{m.output_usd_per_mtok / 1e6:.12g}"}
    return ModelCard(id=m.name, owned_by=m.provider_name, podium=info, context_length=m.context_window, pricing=pricing)

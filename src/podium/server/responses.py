"""Answering a planned request: a run to one chat.completion (``n`` > 1: ``n`` runs in parallel, one
choice each), or streamed as SSE chunks; model cards."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

from ..errors import missing_extra
from ..pool import ModelSpec
from ..types import RunResult, new_run_id
from .accounting import identity_headers
from .compat import ignored_fields
from .errors import ApiError
from .keyguard import KeyGuard
from .metrics import Metrics
from .middleware import ScrubbedJSON, error_response
from .outcomes import breakers_wait, failed_run_error
from .plan import Plan
from .requestlog import run_fields
from .schemas import ModelCard, completion_id
from .service import Service
from .stream import completion_body, record_finished
from .tiers import Tier
from .traces import Traces

try:
    from fastapi.responses import JSONResponse
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
    """Run a plan to the end and answer with one chat.completion (an error if it produced nothing).
    ``n`` > 1: ``n`` runs of the plan in parallel (each its own trace), one choice each; if any fails,
    the answer is its error (all or nothing, as OpenAI's ``n``)."""
    plans = [plan, *(dataclasses.replace(plan, trace_id=new_run_id()) for _ in range((plan.request.n or 1) - 1))]
    logged: list[dict[str, Any]] = [fields] if len(plans) == 1 else [{} for _ in plans]
    if len(plans) == 1:  # most requests: no task of its own (gather would make one)
        answers = [await answer(plan, service, store, metrics, started, guard, fields)]
    else:
        answers = await asyncio.gather(
            *(answer(p, service, store, metrics, started, guard, f) for p, f in zip(plans, logged))
        )
    if len(plans) > 1:
        fields.update(merge_log_fields(logged))
    failed = next((a for a in answers if isinstance(a, ApiError)), None)
    if failed is not None:
        return error_response(failed)
    bodies = [a for a in answers if not isinstance(a, ApiError)]
    body, headers = merge_choices([b for b, _ in bodies]), bodies[0][1]
    if len(bodies) > 1:
        headers["x-podium-cost-usd"] = headers["x-litellm-response-cost"] = f"{body['usage']['cost']:.8f}"
    return ScrubbedJSON(body, headers=headers)


def merge_log_fields(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The request log's fields for ``n`` runs: the first run's, with tokens and cost summed."""
    merged = {**runs[0], "trace_ids": [r.get("trace_id") for r in runs]}
    for name in ("prompt_tokens", "completion_tokens", "cost_usd"):
        merged[name] = round(sum(r.get(name) or 0 for r in runs), 8)
    merged["usage_estimated"] = any(r.get("usage_estimated") for r in runs)
    return merged


def merge_choices(bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """One chat.completion of several runs' answers: choice ``i`` from run ``i``, usage summed."""
    body = bodies[0]
    if len(bodies) == 1:
        return body
    body["choices"] = [{**b["choices"][0], "index": i} for i, b in enumerate(bodies)]
    usage = body["usage"]
    for other in bodies[1:]:
        for name, value in other["usage"].items():
            if name == "estimated":
                usage[name] = usage[name] or value
            elif isinstance(value, int | float):
                usage[name] = round(usage[name] + value, 8) if isinstance(value, float) else usage[name] + value
    body["podium"]["trace_ids"] = [b["podium"]["trace_id"] for b in bodies]
    return body


async def answer(
    plan: Plan,
    service: Service,
    store: Traces,
    metrics: Metrics,
    started: float,
    guard: KeyGuard,
    fields: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, str]] | ApiError:
    """One run of the plan: its chat.completion body and headers, or the error it answers with."""
    specs = [service.pool.config_model(n) for n in ([] if plan.tier else plan.chain)]
    breakers = [service.breakers.get(s) for s in specs if s is not None]
    open_before = breakers_wait(breakers) is not None  # refused by open circuits, not failed on its own
    outcome = await service.run(plan)
    result = outcome.result
    settle(plan, result, guard, fields)
    headers = {"x-podium-trace-id": result.run_id}
    if result.answer is None:
        wait = breakers_wait(breakers) if open_before else None
        err = failed_run_error(result, headers, wait)
        metrics.run(plan.model, result)
        metrics.request(plan.model, plan.kind, err.status, time.perf_counter() - started)
        await store.record(result, plan.key.name)
        return err
    await record_finished(plan, result, store, metrics, started)
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
    return body, headers


def settle(plan: Plan, result: RunResult, guard: KeyGuard, fields: dict[str, Any]) -> None:
    """A finished run's key accounting (spend, tokens) and its request-log fields."""
    guard.account(plan.key.name, result)
    fields.update(run_fields(result))


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

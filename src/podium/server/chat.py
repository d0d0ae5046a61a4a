"""``POST /v1/chat/completions``: the key checks and the route's work, shared by the FastAPI route and
its raw ASGI fast path (:mod:`podium.server.fastroute`), so both answer alike.

Also the error bodies of the exceptions a request can raise (:func:`error_for`), which the app's
exception handlers and the fast path both use.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from ..errors import PodiumError, UsageError, missing_extra
from ..types import RunResult
from .auth import ApiKey
from .compat import check_request, format_instruction, unsupported_on_tier
from .errors import ApiError
from .keyguard import KeyGuard
from .metrics import Metrics
from .middleware import error_response, validation_message
from .outcomes import check_budget_fits, check_context_fits
from .plan import Plan
from .responses import complete, settle
from .routing import fallback_chain
from .schemas import ChatCompletionRequest, PodiumOptions
from .service import Service
from .stream import stream_response
from .traces import Traces

try:
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import Response
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError:  # pragma: no cover - exercised only without the extra
    raise missing_extra("fastapi", "server") from None

log = logging.getLogger("podium.server")


class Chat:
    """The chat route's work over one app's service, trace store, metrics and key guard."""

    def __init__(self, service: Service, store: Traces, metrics: Metrics, guard: KeyGuard) -> None:
        self.service, self.store, self.metrics, self.guard = service, store, metrics, guard

    def authenticate(self, authorization: str | None) -> ApiKey:
        """The caller's key (401 when it is missing, unknown or expired)."""
        ring = self.guard.ring
        ring.maybe_reload()
        key = ring.identify(authorization)
        if key is None:
            raise ApiError(
                401,
                "missing or unknown API key; send 'Authorization: Bearer <key>'",
                type="authentication_error",
                code="invalid_api_key",
            )
        self.guard.expired(key)
        return key

    async def throttle(self, key: ApiKey) -> ApiKey:
        """``key`` if its request rate allows one more request now, else 429 with ``Retry-After``."""
        wait = await self.guard.ring.athrottle(key)
        if wait > 0:
            self.metrics.error("", "rate_limited")
            raise ApiError(
                429,
                f"rate limit of API key '{key.name}' exceeded; retry in {wait:.1f}s",
                type="rate_limit_error",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        return key

    async def handle(self, body: ChatCompletionRequest, key: ApiKey, fields: dict[str, Any]) -> Response:
        """Answer a validated chat request of an admitted key; ``fields`` go to the request log."""
        started = time.perf_counter()
        guard, service, store, metrics = self.guard, self.service, self.store, self.metrics
        fields.update(key=key.name, model=body.model, stream=body.stream)
        await guard.aadmit(key)
        settled: list[RunResult] = []  # the run settled its spend hold (else it is released at the end)

        def on_finished(result: RunResult) -> None:
            settled.append(result)
            settle(plan, result, guard, fields)

        try:
            plan = plan_request(body, key, service, metrics)
        except Exception:
            guard.release(key.name)  # its spend hold: this request will not run
            raise
        fields.update(kind=plan.kind, trace_id=plan.trace_id)
        if body.stream:
            response = stream_response(plan, service, store, metrics, started, on_finished, fields)
            response.body_iterator = guard.release_after(key.name, response.body_iterator, settled)
            return response
        metrics.in_flight += 1
        try:
            return await complete(plan, service, store, metrics, started, guard, fields)
        except BaseException:
            guard.release(key.name)  # the run failed before its spend was settled
            raise
        finally:
            metrics.in_flight -= 1


def plan_request(body: ChatCompletionRequest, key: ApiKey, service: Service, metrics: Metrics) -> Plan:
    """The chat request's plan: the key's policy narrowed by the request's provider preferences, its
    model fallbacks (pool models) or a tier run whose context and budget are checked to fit."""
    pool = service.pool
    if body.provider is not None:  # OpenRouter's preferences narrow the request's podium policy
        options = body.podium or PodiumOptions()
        narrowed = options.policy().narrow(body.provider.policy(pool))
        body.podium = options.model_copy(update=narrowed.model_dump())
    try:
        plan = service.plan(body, key)
    except ApiError as err:  # unknown names share one label: clients must not grow the metrics
        known = body.model in service.tiers or any(m.name == body.model for m in pool.config.models)
        metrics.request(body.model if known else "(unknown)", "unknown", err.status)
        raise
    check_request(body, tier=plan.tier is not None)
    if plan.tier is None:
        plan.chain = fallback_chain(plan.model, plan.chain, body.models, body.provider, pool, plan.policy)
    elif body.models is not None:
        raise unsupported_on_tier("models", body.model, "per-request model fallbacks")
    if plan.tier is not None and plan.budget is not None:
        plan.query += format_instruction(
            body.response_format.model_dump() if body.response_format is not None else None
        )
        view = service.views[plan.tier.name].restrict(plan.policy)
        check_context_fits(view, plan.query)
        check_budget_fits(view, plan.query, plan.budget.max_cost_usd, plan.budget.max_tokens)
    return plan


def error_for(exc: Exception, metrics: Metrics) -> Response | None:
    """The OpenAI-style answer to an exception the app has a handler for (None: an unexpected one)."""
    if isinstance(exc, ApiError):
        return error_response(exc)
    if isinstance(exc, RequestValidationError):
        metrics.error("", "invalid_request")
        return error_response(validation_message(exc))
    if isinstance(exc, StarletteHTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(
            ApiError(
                exc.status_code, str(exc.detail), type=kind, code=str(exc.status_code), headers=dict(exc.headers or {})
            )
        )  # e.g. Allow on a 405
    if isinstance(exc, UsageError):
        return error_response(ApiError(400, str(exc)))
    return None


def bug_response(exc: Exception, metrics: Metrics, path: str) -> Response:
    """The 500 answer to an unexpected exception, logged with its traceback."""
    log.exception("unhandled error on %s", path, exc_info=exc)
    metrics.error("", "server_error")
    kind = "upstream_error" if isinstance(exc, PodiumError) else "server_error"
    return error_response(ApiError(500, f"internal error: {type(exc).__name__}", type=kind, code="internal_error"))

"""The FastAPI app: OpenAI-compatible routes over a pool, its tiers, API keys and the trace store.

Routes: ``POST /v1/chat/completions`` (streaming or not), ``GET /v1/models``,
``GET /v1/traces/{id}``, ``GET /healthz``, ``GET /metrics``. Every error, FastAPI's own included,
is answered as ``{"error": {"message", "type", "param", "code"}}``; nothing escapes as a 500 page.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from ..errors import PodiumError, UsageError, missing_extra
from ..hosts import host_name
from ..pool import Pool, load_pool
from ..scrub import install_log_scrubbing
from ..state import open_state, redis_url
from ..types import RunResult
from .auth import ApiKey, KeyRing
from .compat import check_request, format_instruction, unsupported_on_tier
from .edges import RequestId, cors_origins
from .errors import ApiError
from .keyguard import KeyGuard
from .metrics import Metrics
from .middleware import BodyLimit, HostCheck, ScrubbedJSON, error_response, validation_message
from .otel import Telemetry
from .otel import from_env as otel_from_env
from .otel import shutdown as otel_shutdown
from .outcomes import check_budget_fits, check_context_fits
from .requestlog import RequestLog
from .requestlog import configure as configure_request_log
from .responses import complete, model_card, settle, tier_card
from .routing import fallback_chain
from .schemas import ChatCompletionRequest, ErrorResponse, ModelCard, ModelList, PodiumOptions
from .service import Plan, Service, model_not_found
from .stream import stream_response
from .tiers import TierSet, load_tiers
from .traces import Traces

try:
    from fastapi import Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError:  # pragma: no cover - exercised only without the extra
    raise missing_extra("fastapi", "server") from None

log = logging.getLogger("podium.server")
MAX_BODY_BYTES = 4 * 1024 * 1024
ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorResponse} for s in (400, 401, 403, 404, 413, 421, 429, 502, 503)
}


def create_app(
    pool: Pool | str = "embedded",
    *,
    tiers: TierSet | str | Path | None = None,
    keys: KeyRing | str | Path | None = None,
    traces: Traces | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    hosts: tuple[str, ...] = (),
    cors: list[str] | None = None,
    request_log: str | Path | None = None,
    telemetry: Telemetry | None = None,
) -> FastAPI:
    """Build the server app. ``pool``: a Pool, shipped pool name or YAML path; ``tiers``: a TierSet or
    file (default: the shipped tiers); ``keys``: a KeyRing or keys file (None: no auth, local use);
    ``hosts``: more ``Host`` names a keyless server answers (see :mod:`podium.hosts`); ``cors``: allowed
    browser origins (default: ``PODIUM_CORS_ORIGINS``, else none; see :mod:`podium.server.edges`);
    ``request_log``: a file (``-``: stderr) for the JSON request lines (default: ``PODIUM_REQUEST_LOG``);
    ``telemetry``: OpenTelemetry export (default: OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set)."""
    install_log_scrubbing()
    pool = load_pool(pool) if isinstance(pool, str) else pool
    tier_set = tiers if isinstance(tiers, TierSet) else load_tiers(tiers)
    ring = keys if isinstance(keys, KeyRing) else KeyRing.load(keys)
    service = Service(pool, tier_set)
    store = traces or Traces()
    metrics = Metrics(lambda: dict(getattr(service.breakers, "breakers", {})))
    configure_request_log(request_log)
    own_telemetry = telemetry is None
    metrics.telemetry = otel_from_env() if telemetry is None else telemetry
    guard = KeyGuard(ring, store.spend)
    _share_state(ring, service, metrics)
    app = FastAPI(
        title="podium",
        version="0.1.0",
        lifespan=_lifespan(service, ring, store, guard, metrics, own_telemetry=own_telemetry),
        default_response_class=ScrubbedJSON,
        description="OpenAI-compatible multi-agent orchestration: tiers are virtual models.",
    )
    app.state.service, app.state.keys, app.state.traces, app.state.metrics = service, ring, store, metrics
    app.state.guard = guard
    install_error_handlers(app, metrics)
    add_middleware(app, ring, hosts, cors, max_body_bytes)
    authenticate, limited = auth_dependencies(guard, metrics)
    add_api_routes(app, limited)
    add_ops_routes(app, authenticate)
    if ring.open and store.store is not None:
        # The viewer shows every stored prompt: served only in keyless (loopback-only) mode.
        from ..traces.viewer import asgi_app

        app.mount("/ui", asgi_app(store.store))  # type: ignore[arg-type]  # Starlette wants MutableMapping scopes; the viewer takes dicts
    app.openapi = lambda: openapi_without_422(app)  # type: ignore[method-assign]
    return app


def _share_state(ring: KeyRing, service: Service, metrics: Metrics) -> None:
    """With ``PODIUM_REDIS_URL``, keep the keys' limits in the shared state; export its health."""
    if ring.state is None and redis_url():
        ring.state = open_state()
    from ..state.caches import FALLBACKS  # the response and decision caches'

    metrics.watch_shared_state(ring.state, service.breakers.shared, FALLBACKS)


def _lifespan(
    service: Service, ring: KeyRing, store: Traces, guard: KeyGuard, metrics: Metrics, *, own_telemetry: bool
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan: watch SIGHUP for key reloads; at shutdown close the service, shared
    state and trace writer, and the telemetry export the app started."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        guard.watch_sighup(asyncio.get_running_loop())
        yield
        await service.aclose()
        if ring.state is not None:
            await ring.state.aclose()
        store.close()  # commit the traces still queued
        if own_telemetry:
            otel_shutdown(metrics.telemetry)

    return lifespan


def add_middleware(
    app: FastAPI, ring: KeyRing, hosts: tuple[str, ...], cors: list[str] | None, max_body_bytes: int
) -> None:
    """Body limit, Host check (with keys), CORS (when origins are allowed), request log and request id."""
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    if ring.open:  # with keys, a request must carry a key, which a rebinding page does not have
        app.add_middleware(HostCheck, names=frozenset(host_name(h) for h in hosts))
    origins = cors_origins(cors)
    if origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["authorization", "content-type", "x-request-id"],
            expose_headers=["x-request-id", "x-podium-trace-id", "x-should-retry"],
        )
    app.add_middleware(RequestLog)
    app.add_middleware(RequestId)  # added last: the outermost layer, so every response carries the id


def openapi_without_422(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI schema, minus FastAPI's 422 responses (validation errors are 400 here)."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        app.openapi_schema = schema
    return app.openapi_schema


def auth_dependencies(
    guard: KeyGuard, metrics: Metrics
) -> tuple[Callable[[Request], Awaitable[ApiKey]], Callable[[Request, ApiKey], Awaitable[ApiKey]]]:
    """FastAPI dependencies: ``authenticate`` (401) and ``limited`` (401, then 429 per key, then the
    key's spend budget and tokens per minute)."""
    ring = guard.ring

    # async on purpose: FastAPI runs a sync dependency in a worker thread, two thread hops a request
    async def authenticate(request: Request) -> ApiKey:
        ring.maybe_reload()
        key = ring.identify(request.headers.get("authorization"))
        if key is None:
            raise ApiError(
                401,
                "missing or unknown API key; send 'Authorization: Bearer <key>'",
                type="authentication_error",
                code="invalid_api_key",
            )
        guard.expired(key)
        return key

    async def limited(request: Request, key: ApiKey = Depends(authenticate)) -> ApiKey:
        wait = await ring.athrottle(key)
        if wait > 0:
            metrics.error("", "rate_limited")
            raise ApiError(
                429,
                f"rate limit of API key '{key.name}' exceeded; retry in {wait:.1f}s",
                type="rate_limit_error",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        return key

    return authenticate, limited


def add_api_routes(app: FastAPI, limited: Any) -> None:
    """``/v1/chat/completions``, ``/v1/models`` and ``/v1/traces/{id}``."""
    service: Service = app.state.service
    store: Traces = app.state.traces
    metrics: Metrics = app.state.metrics
    guard: KeyGuard = app.state.guard

    @app.post("/v1/chat/completions", responses=ERRORS, summary="Create a chat completion (a tier or a pool model)")
    async def chat_completions(request: Request, body: ChatCompletionRequest, key: ApiKey = Depends(limited)) -> Any:
        started = time.perf_counter()
        fields: dict[str, Any] = getattr(request.state, "log", {})
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
        metrics.in_flight.inc()
        try:
            return await complete(plan, service, store, metrics, started, guard, fields)
        except BaseException:
            guard.release(key.name)  # the run failed before its spend was settled
            raise
        finally:
            metrics.in_flight.dec()

    add_model_routes(app, limited)

    @app.get("/v1/traces/{trace_id}", responses=ERRORS, summary="One run's trace, for the key that made it")
    async def get_trace(trace_id: str, key: ApiKey = Depends(limited)) -> dict[str, Any]:
        run = await store.get(trace_id, owner=key.name)
        if run is None:
            why = "" if store.enabled else " (trace storage is off: PODIUM_TRACES=off)"
            raise ApiError(
                404, f"no trace '{trace_id}' for this API key{why}", param="trace_id", code="trace_not_found"
            )
        return run


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


def add_model_routes(app: FastAPI, limited: Any) -> None:
    """``/v1/models`` and ``/v1/models/{id}``: the tiers and the pool models the key's policy allows."""
    service: Service = app.state.service
    pool = service.pool

    @app.get("/v1/models", response_model=ModelList, responses=ERRORS, summary="List the tiers and the pool's models")
    async def list_models(key: ApiKey = Depends(limited)) -> ModelList:
        cards = [tier_card(t) for t in service.tiers.values()]
        cards += [model_card(m) for m in pool.config.models if key.policy.allows(m)]
        return ModelList(data=cards)

    @app.get("/v1/models/{model_id:path}", response_model=ModelCard, responses=ERRORS, summary="One tier or pool model")
    async def get_model(model_id: str, key: ApiKey = Depends(limited)) -> ModelCard:
        if model_id in service.tiers:
            return tier_card(service.tiers[model_id])
        spec = next((m for m in pool.config.models if m.name == model_id), None)
        if spec is None or not key.policy.allows(spec):  # like the chat route: a key learns nothing beyond its policy
            raise model_not_found(model_id)
        return model_card(spec)


def add_ops_routes(app: FastAPI, authenticate: Any) -> None:
    """``/healthz`` (open) and ``/metrics`` (any valid key when keys are configured)."""
    service: Service = app.state.service
    ring: KeyRing = app.state.keys
    store: Traces = app.state.traces
    metrics: Metrics = app.state.metrics
    pool = service.pool

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "pool": pool.name,
            "tiers": list(service.tiers),
            "models": len(pool.config.models),
            "auth": not ring.open,
            "traces": store.enabled,
        }

    metrics_responses = {
        **ERRORS,
        200: {
            "description": "Prometheus text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
    }

    @app.get("/metrics", summary="Prometheus metrics", responses=metrics_responses, response_class=PlainTextResponse)
    async def get_metrics(key: ApiKey = Depends(authenticate)) -> Response:
        data, ctype = metrics.render()
        return Response(data, media_type=ctype)


def install_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    """OpenAI-style bodies for podium's errors, FastAPI's validation errors and HTTP errors."""

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.error("", "invalid_request")
        return error_response(validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(
            ApiError(
                exc.status_code, str(exc.detail), type=kind, code=str(exc.status_code), headers=dict(exc.headers or {})
            )
        )  # e.g. Allow on a 405

    @app.exception_handler(UsageError)
    async def on_usage(request: Request, exc: UsageError) -> JSONResponse:
        return error_response(ApiError(400, str(exc)))

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        metrics.error("", "server_error")
        kind = "upstream_error" if isinstance(exc, PodiumError) else "server_error"
        return error_response(ApiError(500, f"internal error: {type(exc).__name__}", type=kind, code="internal_error"))

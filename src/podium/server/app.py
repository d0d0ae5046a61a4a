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
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from ..errors import PodiumError, UsageError, missing_extra
from ..hosts import host_allowed, host_name
from ..pool import ModelSpec, Pool, load_pool
from ..scrub import install_log_scrubbing, scrub_value
from ..types import RunResult
from .accounting import identity_headers
from .auth import ApiKey, KeyRing
from .compat import check_request, format_instruction, ignored_fields, unsupported_on_tier
from .edges import RequestId, cors_origins
from .errors import ApiError
from .keyguard import KeyGuard
from .metrics import Metrics
from .outcomes import check_budget_fits, check_context_fits, failed_run_error
from .requestlog import RequestLog, run_fields
from .requestlog import configure as configure_request_log
from .routing import fallback_chain
from .schemas import ChatCompletionRequest, ErrorResponse, ModelCard, ModelList, PodiumOptions, completion_id
from .service import Plan, Service, model_not_found
from .stream import AnswerGate, EventStream, completion_body, sse, stop_run
from .tiers import Tier, TierSet, load_tiers
from .traces import Traces

try:
    from fastapi import Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError:  # pragma: no cover - exercised only without the extra
    raise missing_extra("fastapi", "server") from None

log = logging.getLogger("podium.server")
MAX_BODY_BYTES = 4 * 1024 * 1024
ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorResponse} for s in (400, 401, 403, 404, 413, 421, 429, 502)
}


class ScrubbedJSON(JSONResponse):
    """Every JSON body the server sends: secrets scrubbed from its values before it is serialized."""

    def render(self, content: Any) -> bytes:
        return super().render(scrub_value(content))


def error_response(err: ApiError) -> JSONResponse:
    return ScrubbedJSON(err.body(), status_code=err.status, headers=err.headers)


class HostCheck:
    """ASGI middleware of a keyless server: 421 unless ``Host`` passes :func:`podium.hosts.host_allowed`."""

    def __init__(self, app: Any, names: frozenset[str]) -> None:
        self.app = app
        self.names = names

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        host = next((v for k, v in scope.get("headers") or [] if k == b"host"), b"").decode("latin-1")
        if host_allowed(host, self.names):
            return await self.app(scope, receive, send)
        err = ApiError(
            421,
            "a server without API keys answers only requests addressed to a loopback name or an IP "
            "address (DNS rebinding protection); use http://127.0.0.1:PORT",
            code="misdirected_request",
        )
        await error_response(err)(scope, receive, send)


class BodyLimit:
    """ASGI middleware: answer 413 (OpenAI-style) to a request body over ``limit`` bytes."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._too_large(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await self._too_large(scope, receive, send)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: dict, receive: Any, send: Any) -> None:
        err = ApiError(413, f"the request body exceeds {self.limit} bytes", code="request_too_large")
        await error_response(err)(scope, receive, send)


def validation_message(exc: RequestValidationError) -> ApiError:
    """A 400 naming the first invalid field (FastAPI would answer 422 in its own format)."""
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        return ApiError(400, "the request body is not valid JSON", code="invalid_json")
    if not loc and first.get("type") == "missing":
        return ApiError(400, "the request body is missing: send a JSON object", code="missing_body")
    msg = "unknown field; remove it" if first.get("type") == "extra_forbidden" else first.get("msg", "invalid")
    param = ".".join(loc) or None
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return ApiError(400, f"invalid request: {param or 'body'}: {msg}{more}", param=param, code="invalid_value")


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
) -> FastAPI:
    """Build the server app. ``pool``: a Pool, shipped pool name or YAML path; ``tiers``: a TierSet or
    file (default: the shipped tiers); ``keys``: a KeyRing or keys file (None: no auth, local use);
    ``hosts``: more ``Host`` names a keyless server answers (see :mod:`podium.hosts`); ``cors``: allowed
    browser origins (default: ``PODIUM_CORS_ORIGINS``, else none; see :mod:`podium.server.edges`);
    ``request_log``: a file (``-``: stderr) for the JSON request lines (default: ``PODIUM_REQUEST_LOG``)."""
    install_log_scrubbing()
    pool = load_pool(pool) if isinstance(pool, str) else pool
    tier_set = tiers if isinstance(tiers, TierSet) else load_tiers(tiers)
    ring = keys if isinstance(keys, KeyRing) else KeyRing.load(keys)
    service = Service(pool, tier_set)
    store = traces or Traces()
    metrics = Metrics(lambda: dict(getattr(service.breakers, "breakers", {})))
    configure_request_log(request_log)
    guard = KeyGuard(ring, store.spend)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        guard.watch_sighup(asyncio.get_running_loop())
        yield
        await service.aclose()

    app = FastAPI(
        title="podium",
        version="0.1.0",
        lifespan=lifespan,
        default_response_class=ScrubbedJSON,
        description="OpenAI-compatible multi-agent orchestration: tiers are virtual models.",
    )
    app.state.service, app.state.keys, app.state.traces, app.state.metrics = service, ring, store, metrics
    app.state.guard = guard
    install_error_handlers(app, metrics)
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

    authenticate, limited = auth_dependencies(guard, metrics)
    add_api_routes(app, limited)
    add_ops_routes(app, authenticate)
    if ring.open and store.store is not None:
        # The viewer shows every stored prompt: served only in keyless (loopback-only) mode.
        from ..traces.viewer import asgi_app

        app.mount("/ui", asgi_app(store.store))
    app.openapi = lambda: openapi_without_422(app)  # type: ignore[method-assign]
    return app


def openapi_without_422(app: FastAPI) -> dict:
    """The OpenAPI schema, minus FastAPI's 422 responses (validation errors are 400 here)."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        app.openapi_schema = schema
    return app.openapi_schema


def auth_dependencies(guard: KeyGuard, metrics: Metrics):
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
        wait = ring.throttle(key)
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
    pool = service.pool

    @app.post("/v1/chat/completions", responses=ERRORS, summary="Create a chat completion (a tier or a pool model)")
    async def chat_completions(request: Request, body: ChatCompletionRequest, key: ApiKey = Depends(limited)) -> Any:
        started = time.perf_counter()
        fields: dict[str, Any] = getattr(request.state, "log", {})
        fields.update(key=key.name, model=body.model, stream=body.stream)
        guard.admit(key)
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
            plan.query += format_instruction(body.response_format and body.response_format.model_dump())
            view = service.views[plan.tier.name].restrict(plan.policy)
            check_context_fits(view, plan.query)
            check_budget_fits(view, plan.query, plan.budget.max_cost_usd, plan.budget.max_tokens)
        fields.update(kind=plan.kind, trace_id=plan.trace_id)
        if body.stream:
            return stream_response(plan, service, store, metrics, started, guard, fields)
        metrics.in_flight.inc()
        try:
            return await complete(plan, service, store, metrics, started, guard, fields)
        finally:
            metrics.in_flight.dec()

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

    @app.get("/v1/traces/{trace_id}", responses=ERRORS, summary="One run's trace, for the key that made it")
    async def get_trace(trace_id: str, key: ApiKey = Depends(limited)) -> dict:
        run = await store.get(trace_id, owner=key.name)
        if run is None:
            why = "" if store.enabled else " (trace storage is off: PODIUM_TRACES=off)"
            raise ApiError(
                404, f"no trace '{trace_id}' for this API key{why}", param="trace_id", code="trace_not_found"
            )
        return run


def tier_card(t: Tier) -> ModelCard:
    """A tier as an OpenAI model object (``podium`` holds what it is)."""
    info = {"kind": "tier", "description": t.description, "max_turns": t.max_turns, "coordinator": t.coordinator}
    return ModelCard(id=t.name, owned_by="podium", podium={**info, "always_verify": t.always_verify})


def model_card(m: ModelSpec) -> ModelCard:
    """A pool model as an OpenAI model object, with OpenRouter-style ``context_length`` and ``pricing``
    (USD per token, as strings) next to podium's own fields."""
    info = {"kind": "model", "region": m.region, "provider": m.provider_name, "roles": m.roles}
    info |= {"input_usd_per_mtok": m.input_usd_per_mtok, "output_usd_per_mtok": m.output_usd_per_mtok}
    info |= {"context_window": m.context_window, "max_tokens": m.max_tokens}
    pricing = {"prompt": f"{m.input_usd_per_mtok / 1e6:.12g}", "completion": f"{m.output_usd_per_mtok / 1e6:.12g}"}
    return ModelCard(id=m.name, owned_by=m.provider_name, podium=info, context_length=m.context_window, pricing=pricing)


def add_ops_routes(app: FastAPI, authenticate: Any) -> None:
    """``/healthz`` (open) and ``/metrics`` (any valid key when keys are configured)."""
    service: Service = app.state.service
    ring: KeyRing = app.state.keys
    store: Traces = app.state.traces
    metrics: Metrics = app.state.metrics
    pool = service.pool

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict:
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
    outcome = await (service.run_tier(plan) if plan.tier else service.run_model(plan))
    result = outcome.result
    await store.record(result, plan.key.name)
    guard.account(plan.key.name, result)
    metrics.run(plan.model, result)
    fields.update(run_fields(result))
    headers = {"x-podium-trace-id": result.run_id}
    if result.answer is None:
        err = failed_run_error(result, headers)
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


_producers: set[asyncio.Task] = set()  # the loop holds tasks weakly; a producer must outlive its client


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

    def __init__(self, content: Any, task: asyncio.Task, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.task = task

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            stop_run(self.task)

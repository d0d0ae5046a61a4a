"""The FastAPI app: OpenAI-compatible routes over a pool, its tiers, API keys and the trace store.

Routes: ``POST /v1/chat/completions`` (streaming or not), ``GET /v1/models``,
``GET /v1/traces/{id}``, ``GET /healthz``, ``GET /metrics``. Every error, FastAPI's own included,
is answered as ``{"error": {"message", "type", "param", "code"}}``; nothing escapes as a 500 page.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from ..errors import PodiumError, UsageError, missing_extra
from ..hosts import host_allowed, host_name
from ..pool import Pool, load_pool
from ..scrub import install_log_scrubbing, scrub_value
from ..state import open_state, redis_url
from .auth import ApiKey, KeyRing
from .errors import ApiError
from .metrics import Metrics
from .schemas import ChatCompletionRequest, ErrorResponse, ModelCard, ModelList, completion_id
from .service import Plan, Service
from .stream import completion_body, record_finished, stream_response
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
) -> FastAPI:
    """Build the server app. ``pool``: a Pool, shipped pool name or YAML path; ``tiers``: a TierSet or
    file (default: the shipped tiers); ``keys``: a KeyRing or keys file (None: no auth, local use);
    ``hosts``: more ``Host`` names a keyless server answers (see :mod:`podium.hosts`)."""
    install_log_scrubbing()
    pool = load_pool(pool) if isinstance(pool, str) else pool
    tier_set = tiers if isinstance(tiers, TierSet) else load_tiers(tiers)
    ring = keys if isinstance(keys, KeyRing) else KeyRing.load(keys)
    service = Service(pool, tier_set)
    store = traces or Traces()
    metrics = Metrics()
    if ring.state is None and redis_url():
        ring.state = open_state()
    metrics.watch_shared_state(ring.state, service.breakers.shared)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await service.aclose()
        if ring.state is not None:
            await ring.state.aclose()
        store.close()  # commit the traces still queued

    app = FastAPI(
        title="podium",
        version="0.1.0",
        lifespan=lifespan,
        default_response_class=ScrubbedJSON,
        description="OpenAI-compatible multi-agent orchestration: tiers are virtual models.",
    )
    app.state.service, app.state.keys, app.state.traces, app.state.metrics = service, ring, store, metrics
    install_error_handlers(app, metrics)
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    if ring.open:  # with keys, a request must carry a key, which a rebinding page does not have
        app.add_middleware(HostCheck, names=frozenset(host_name(h) for h in hosts))

    authenticate, limited = auth_dependencies(ring, metrics)
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


def auth_dependencies(ring: KeyRing, metrics: Metrics):
    """FastAPI dependencies: ``authenticate`` (401) and ``limited`` (401, then 429 per key)."""

    # async on purpose: FastAPI runs a sync dependency in a worker thread, two thread hops a request
    async def authenticate(request: Request) -> ApiKey:
        key = ring.identify(request.headers.get("authorization"))
        if key is None:
            raise ApiError(
                401,
                "missing or unknown API key; send 'Authorization: Bearer <key>'",
                type="authentication_error",
                code="invalid_api_key",
            )
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
    pool = service.pool

    @app.post("/v1/chat/completions", responses=ERRORS, summary="Create a chat completion (a tier or a pool model)")
    async def chat_completions(body: ChatCompletionRequest, key: ApiKey = Depends(limited)) -> Any:
        started = time.perf_counter()
        try:
            plan = service.plan(body, key)
        except ApiError as err:  # unknown names share one label: clients must not grow the metrics
            known = body.model in service.tiers or any(m.name == body.model for m in pool.config.models)
            metrics.request(body.model if known else "(unknown)", "unknown", err.status)
            raise
        if body.stream:
            return stream_response(plan, service, store, metrics, started)
        return await complete(plan, service, store, metrics, started)

    @app.get("/v1/models", response_model=ModelList, responses=ERRORS, summary="List the tiers and the pool's models")
    async def list_models(key: ApiKey = Depends(limited)) -> ModelList:
        cards = [
            ModelCard(
                id=t.name,
                owned_by="podium",
                podium={
                    "kind": "tier",
                    "description": t.description,
                    "max_turns": t.max_turns,
                    "coordinator": t.coordinator,
                    "always_verify": t.always_verify,
                },
            )
            for t in service.tiers.values()
        ]
        cards += [
            ModelCard(
                id=m.name,
                owned_by=m.provider_name,
                podium={"kind": "model", "region": m.region, "provider": m.provider_name, "roles": m.roles},
            )
            for m in pool.config.models
            if key.policy.allows(m)
        ]
        return ModelList(data=cards)

    @app.get("/v1/traces/{trace_id}", responses=ERRORS, summary="One run's trace, for the key that made it")
    async def get_trace(trace_id: str, key: ApiKey = Depends(limited)) -> dict:
        run = await store.get(trace_id, owner=key.name)
        if run is None:
            why = "" if store.enabled else " (trace storage is off: PODIUM_TRACES=off)"
            raise ApiError(
                404, f"no trace '{trace_id}' for this API key{why}", param="trace_id", code="trace_not_found"
            )
        return run


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


async def complete(plan: Plan, service: Service, store: Traces, metrics: Metrics, started: float) -> JSONResponse:
    """Run a plan to the end and answer with one chat.completion (502 if it produced nothing)."""
    outcome = await service.run(plan)
    result = outcome.result
    await record_finished(plan, result, store, metrics, started)
    headers = {"x-podium-trace-id": result.run_id}
    if result.answer is None:
        err = ApiError(
            502,
            f"the run produced no answer: {result.reason}",
            type="upstream_error",
            code="run_failed",
            headers=headers,
        )
        return error_response(err)
    return ScrubbedJSON(completion_body(plan, outcome, completion_id()), headers=headers)

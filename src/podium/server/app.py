"""The FastAPI app: OpenAI-compatible routes over a pool, its tiers, API keys and the trace store.

Routes: ``POST /v1/chat/completions`` (streaming or not), ``GET /v1/models``,
``GET /v1/traces/{id}``, ``GET /healthz``, ``GET /metrics``. Every error, FastAPI's own included,
is answered as ``{"error": {"message", "type", "param", "code"}}``; nothing escapes as a 500 page.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from ..errors import UsageError, missing_extra
from ..hosts import host_name
from ..pool import Pool, load_pool
from ..scrub import install_log_scrubbing
from ..state import open_state, redis_url
from .auth import ApiKey, KeyRing
from .chat import Chat, bug_response, error_for
from .edges import ASGIApp, Receive, RequestEdge, Scope, Send, cors_origins
from .errors import ApiError
from .fastroute import ChatRoute
from .keyguard import KeyGuard
from .metrics import Metrics
from .middleware import RequestGate, ScrubbedJSON
from .otel import Telemetry
from .otel import from_env as otel_from_env
from .otel import shutdown as otel_shutdown
from .plan import model_not_found
from .requestlog import configure as configure_request_log
from .responses import model_card, tier_card
from .schemas import ChatCompletionRequest, ErrorResponse, ModelCard, ModelList
from .service import Service
from .tiers import TierSet, load_tiers
from .traces import Traces

try:
    from fastapi import Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import PlainTextResponse, Response
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
    fast_chat: bool = True,
) -> PodiumApp:
    """Build the server app. ``pool``: a Pool, shipped pool name or YAML path; ``tiers``: a TierSet or
    file (default: the shipped tiers); ``keys``: a KeyRing or keys file (None: no auth, local use);
    ``hosts``: more ``Host`` names a keyless server answers (see :mod:`podium.hosts`); ``cors``: allowed
    browser origins (default: ``PODIUM_CORS_ORIGINS``, else none; see :mod:`podium.server.edges`);
    ``request_log``: a file (``-``: stderr) for the JSON request lines (default: ``PODIUM_REQUEST_LOG``);
    ``telemetry``: OpenTelemetry export (default: OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set);
    ``fast_chat``: answer JSON chat requests in :class:`~podium.server.fastroute.ChatRoute` (False: all
    through FastAPI's routing, which answers alike at more CPU per request)."""
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
    app = PodiumApp(
        title="podium",
        version="0.1.0",
        lifespan=_lifespan(service, ring, store, guard, metrics, own_telemetry=own_telemetry),
        default_response_class=ScrubbedJSON,
        description="OpenAI-compatible multi-agent orchestration: tiers are virtual models.",
        **http_telemetry(on=metrics.telemetry is not None),
    )
    app.state.service, app.state.keys, app.state.traces, app.state.metrics = service, ring, store, metrics
    app.state.guard = guard
    install_error_handlers(app, metrics)
    chat = Chat(service, store, metrics, guard)
    layers = edge_layers(ring, hosts, cors, max_body_bytes)
    if fast_chat:  # the innermost layer, inside the body limit and every other edge
        layers.append((ChatRoute, {"chat": chat}))
    if metrics.telemetry is None:
        app.edges = wrap(layers, FastAPIStack(app))
    else:  # FastAPI's own HTTP telemetry wraps its stack: every request must pass through it first
        for cls, options in reversed(layers):
            app.add_middleware(cls, **options)  # type: ignore[arg-type]  # each an ASGI layer taking app first
    authenticate, limited = auth_dependencies(chat)
    add_api_routes(app, chat, limited)
    add_ops_routes(app, authenticate)
    if ring.open and store.store is not None:
        # The viewer shows every stored prompt: served only in keyless (loopback-only) mode.
        from ..traces.viewer import asgi_app

        app.mount("/ui", asgi_app(store.store))  # type: ignore[arg-type]  # Starlette wants MutableMapping scopes; the viewer takes dicts
    app.openapi = lambda: openapi_without_422(app)  # type: ignore[method-assign]
    return app


def http_telemetry(*, on: bool) -> dict[str, Any]:
    """FastAPI's own HTTP spans and metrics (FastAPI >= 0.165) only while podium exports telemetry:
    otherwise no provider is set, they record nothing, and finding that out costs ≈ 9 µs a request."""
    if on or "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


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
        await store.aclose()  # commit the traces still queued
        if own_telemetry:
            otel_shutdown(metrics.telemetry)

    return lifespan


class PodiumApp(FastAPI):
    """FastAPI, with podium's edge layers (:func:`edge_layers` and the chat fast route) in front of
    FastAPI's own stack rather than inside it.

    FastAPI puts its error, telemetry and body-limit layers around any middleware added to it: five
    more coroutine calls per request (three of them wrapping ``send``), which the fast route never
    needs, since it answers its own errors. Served this way, a request passes podium's edges first,
    and only what the fast route does not answer goes on to FastAPI (:class:`FastAPIStack`), with
    the same edges around it as before. Without ``edges`` (telemetry on): plain FastAPI."""

    edges: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.edges is None:
            await super().__call__(scope, receive, send)
        else:
            await self.edges(scope, receive, send)


class FastAPIStack:
    """The innermost edge of a :class:`PodiumApp`: its FastAPI stack (routing, handlers, lifespan)."""

    def __init__(self, app: PodiumApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await FastAPI.__call__(self.app, scope, receive, send)


Layer = tuple[type, dict[str, Any]]  # an ASGI layer's class (built with the app it wraps first) and options


def wrap(layers: list[Layer], app: ASGIApp) -> ASGIApp:
    """``app`` inside ``layers``, the first of them outermost."""
    for cls, options in reversed(layers):
        app = cls(app, **options)
    return app


def edge_layers(ring: KeyRing, hosts: tuple[str, ...], cors: list[str] | None, max_body_bytes: int) -> list[Layer]:
    """Outermost first: request id and request log (so every response carries the id), CORS (when
    origins are allowed), then the Host check (without keys) and body limit."""
    layers: list[Layer] = [(RequestEdge, {})]
    origins = cors_origins(cors)
    if origins:
        from starlette.middleware.cors import CORSMiddleware

        cors_options = {
            "allow_origins": origins,
            "allow_methods": ["GET", "POST", "OPTIONS"],
            "allow_headers": ["authorization", "content-type", "x-request-id"],
            "expose_headers": ["x-request-id", "x-podium-trace-id", "x-should-retry"],
        }
        layers.append((CORSMiddleware, cors_options))
    # with keys, a request must carry a key, which a rebinding page does not have: no Host check
    names = frozenset(host_name(h) for h in hosts) if ring.open else None
    layers.append((RequestGate, {"limit": max_body_bytes, "names": names}))
    return layers


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
    chat: Chat,
) -> tuple[Callable[[Request], Awaitable[ApiKey]], Callable[[Request, ApiKey], Awaitable[ApiKey]]]:
    """FastAPI dependencies: ``authenticate`` (401) and ``limited`` (401, then 429 per key)."""

    # async on purpose: FastAPI runs a sync dependency in a worker thread, two thread hops a request
    async def authenticate(request: Request) -> ApiKey:
        return chat.authenticate(request.headers.get("authorization"))

    async def limited(request: Request, key: ApiKey = Depends(authenticate)) -> ApiKey:
        return await chat.throttle(key)

    return authenticate, limited


def add_api_routes(app: FastAPI, chat: Chat, limited: Any) -> None:
    """``/v1/chat/completions`` (its JSON requests are answered by :class:`ChatRoute` before they reach
    FastAPI), ``/v1/models`` and ``/v1/traces/{id}``."""
    store: Traces = app.state.traces

    @app.post("/v1/chat/completions", responses=ERRORS, summary="Create a chat completion (a tier or a pool model)")
    async def chat_completions(request: Request, body: ChatCompletionRequest, key: ApiKey = Depends(limited)) -> Any:
        return await chat.handle(body, key, getattr(request.state, "log", {}))

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
    """OpenAI-style bodies for podium's errors, FastAPI's validation errors and HTTP errors
    (:func:`podium.server.chat.error_for`), and a 500 for anything else."""

    async def on_error(request: Request, exc: Exception) -> Response:
        response = error_for(exc, metrics)
        assert response is not None  # registered for the classes error_for answers
        return response

    for kind in (ApiError, RequestValidationError, StarletteHTTPException, UsageError):
        app.add_exception_handler(kind, on_error)

    async def on_bug(request: Request, exc: Exception) -> Response:
        return bug_response(exc, metrics, request.url.path)

    app.add_exception_handler(Exception, on_bug)

"""ASGI layers and error bodies of the server app: scrubbed JSON, the request gate (the keyless Host
check and the body limit), and FastAPI validation errors as OpenAI-style 400s."""

from __future__ import annotations

import logging
from typing import Any

from ..errors import missing_extra
from ..hosts import host_allowed
from ..scrub import compact_json_scrubbed
from .edges import ASGIApp, Receive, Scope, Send, replay_body
from .errors import ApiError

try:
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
except ImportError:  # pragma: no cover - exercised only without the extra
    raise missing_extra("fastapi", "server") from None

log = logging.getLogger("podium.server")


class ScrubbedJSON(JSONResponse):
    """Every JSON body the server sends: secrets scrubbed from its values before it is serialized."""

    def render(self, content: Any) -> bytes:
        # Starlette's JSONResponse.render (compact, UTF-8, no NaN), the secrets scrubbed
        return compact_json_scrubbed(content)


def error_response(err: ApiError) -> JSONResponse:
    return ScrubbedJSON(err.body(), status_code=err.status, headers=err.headers)


BODY = "podium.body"  # the scope key under which RequestGate hands on the request body it read


class RequestGate:
    """ASGI middleware, the edges a request passes before any route, in one layer (it runs on every
    request):

    - without API keys (``names`` given): 421 unless ``Host`` passes :func:`podium.hosts.host_allowed`;
    - a body over ``limit`` bytes: 413, OpenAI-style (a declared ``content-length`` over it is
      refused before any of the body is read);
    - the body, read here once, goes on in ``scope["podium.body"]`` for a route that wants it whole
      (:class:`podium.server.fastroute.ChatRoute`) and is handed out again by ``receive``."""

    def __init__(self, app: ASGIApp, limit: int, names: frozenset[str] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.names = names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host: bytes | None = None
        declared = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value if host is None else host  # the first, as Starlette reads it
            elif name == b"content-length":
                declared = value
        if self.names is not None and not host_allowed((host or b"").decode("latin-1"), self.names):
            return await self._misdirected(scope, receive, send)
        if kind != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
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
        scope[BODY] = body
        await self.app(scope, replay_body(body, receive), send)

    async def _misdirected(self, scope: Scope, receive: Receive, send: Send) -> None:
        err = ApiError(
            421,
            "a server without API keys answers only requests addressed to a loopback name or an IP "
            "address (DNS rebinding protection); use http://127.0.0.1:PORT",
            code="misdirected_request",
        )
        await error_response(err)(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
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

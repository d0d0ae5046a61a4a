"""ASGI layers and error bodies of the server app: scrubbed JSON, the keyless Host check, the body
limit, and FastAPI validation errors as OpenAI-style 400s."""

from __future__ import annotations

import logging
from typing import Any

from ..errors import missing_extra
from ..hosts import host_allowed
from ..scrub import dumps_scrubbed
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
        # Starlette's JSONResponse.render, the secrets scrubbed (podium.scrub.dumps_scrubbed)
        return dumps_scrubbed(content, allow_nan=False, indent=None, separators=(",", ":")).encode("utf-8")


def error_response(err: ApiError) -> JSONResponse:
    return ScrubbedJSON(err.body(), status_code=err.status, headers=err.headers)


class HostCheck:
    """ASGI middleware of a keyless server: 421 unless ``Host`` passes :func:`podium.hosts.host_allowed`."""

    def __init__(self, app: ASGIApp, names: frozenset[str]) -> None:
        self.app = app
        self.names = names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = next((v for k, v in scope.get("headers") or [] if k == b"host"), b"").decode("latin-1")
        if host_allowed(host, self.names):
            await self.app(scope, receive, send)
            return
        err = ApiError(
            421,
            "a server without API keys answers only requests addressed to a loopback name or an IP "
            "address (DNS rebinding protection); use http://127.0.0.1:PORT",
            code="misdirected_request",
        )
        await error_response(err)(scope, receive, send)


class BodyLimit:
    """ASGI middleware: answer 413 (OpenAI-style) to a request body over ``limit`` bytes."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
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
        await self.app(scope, replay_body(body, receive), send)

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

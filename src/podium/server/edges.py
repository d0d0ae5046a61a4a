"""HTTP edges every response shares: a request id, retry advice for SDKs, and CORS.

- ``x-request-id``: a client's own id (letters, digits, ``._:-``, at most 128) is echoed back,
  else one is made up; it is on every response, errors included, and in the request log.
- ``x-should-retry``: the header the official ``openai`` SDK (and clients built on it) read
  before their automatic retries. podium sends ``false`` on a failure a retry will not fix (a run
  that already went through its own retries and fallbacks, a budget too small for any call), so a
  failed orchestration is not executed three times.
- CORS: off unless origins are configured (``create_app(cors_origins=...)`` or the environment
  variable ``PODIUM_CORS_ORIGINS``, comma-separated, ``*`` for any origin).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from ..ids import random_hex
from . import requestlog

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_ID = "x-request-id"
NO_RETRY = {"x-should-retry": "false"}
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The client's ``x-request-id`` when it is a sane token, else a fresh ``req_...`` id."""
    for name, value in headers:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _VALID_ID.match(text):
                return text
    return f"req_{random_hex(24)}"


class RequestEdge:
    """ASGI middleware, the outermost: the request id (in ``scope["state"]["request_id"]`` and on the
    response) and, while request lines are written, the request's line once its response has been
    sent (:mod:`podium.server.requestlog`; routes add fields to ``scope["state"]["log"]``). Both
    through one wrapper of ``send``: this runs on every request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope["headers"])
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        own = (b"x-request-id", rid.encode())
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*(h for h in message.get("headers", ()) if h[0].lower() != own[0]), own]
            await send(message)

        if not requestlog.enabled():
            await self.app(scope, receive, send_with_id)
            return
        started = time.perf_counter()
        fields: dict[str, Any] = {}
        state["log"] = fields
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            requestlog.write_line(scope, status, started, fields)


def cors_origins(configured: list[str] | None) -> list[str]:
    """The allowed CORS origins: the argument, else ``PODIUM_CORS_ORIGINS`` (comma-separated)."""
    if configured is not None:
        return configured
    return [o.strip() for o in os.environ.get("PODIUM_CORS_ORIGINS", "").split(",") if o.strip()]


def replay_body(body: bytes, receive: Receive) -> Receive:
    """``receive`` with ``body`` handed out again first."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay

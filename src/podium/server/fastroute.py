"""The hot route, ``POST /v1/chat/completions`` with a JSON body, answered without FastAPI's routing.

FastAPI spends more CPU per request on its machinery (route matching, the dependency graph solved
per request, its ``Request`` object, exception and exit-stack layers) than podium spends on a
pass-through. :class:`ChatRoute` is the innermost of the app's ASGI layers: the request id, request
log, CORS, Host check and body limit still wrap it, and it does what the FastAPI route does, in
the same order, with the same code (:class:`podium.server.chat.Chat`):

1. the JSON body is parsed (before any key check, as FastAPI does);
2. the key is authenticated (401) and throttled (429);
3. the body is validated (400 naming the first invalid field, as FastAPI's validation errors are
   answered); then the route runs.

Anything else goes on to FastAPI with the body replayed, so its answer is FastAPI's own: another
method or path, a content type other than ``application/json``, an empty body, or one that does not
parse as JSON. Exceptions get the app's error bodies (:func:`podium.server.chat.error_for`).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from .chat import Chat, bug_response, error_for
from .edges import ASGIApp, Receive, Scope, Send, replay_body
from .middleware import BODY
from .schemas import ChatCompletionRequest, may_hold_surrogates

try:
    from fastapi.exceptions import RequestValidationError
except ImportError:  # pragma: no cover - exercised only without the extra
    from ..errors import missing_extra

    raise missing_extra("fastapi", "server") from None

PATH = "/v1/chat/completions"


def _header(scope: Scope, name: bytes) -> str | None:
    """The first ``name`` header (as Starlette's ``request.headers.get``)."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _is_json(content_type: str | None) -> bool:
    return content_type is not None and content_type.split(";", 1)[0].strip().lower() == "application/json"


class ChatRoute:
    """ASGI layer: the chat route for JSON bodies (see the module doc); the rest goes to ``app``."""

    def __init__(self, app: ASGIApp, chat: Chat) -> None:
        self.app = app
        self.chat = chat

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != PATH
            or scope["method"] != "POST"
            or scope.get("root_path")
            or not _is_json(_header(scope, b"content-type"))
        ):
            await self.app(scope, receive, send)
            return
        body = scope.get(BODY)
        if body is None:  # no RequestGate outside: read it here
            body, more = b"", True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body += message.get("body", b"")
                more = message.get("more_body", False)
            receive = replay_body(body, receive)
        try:
            data = json.loads(body) if body else None
        except Exception:
            data = None
        if data is None:  # FastAPI's own answer (invalid JSON, no body, ...)
            await self.app(scope, receive, send)
            return
        try:
            response = await self._answer(scope, data, may_hold_surrogates(body))
        except Exception as exc:
            response = error_for(exc, self.chat.metrics) or bug_response(exc, self.chat.metrics, scope["path"])
        await response(scope, receive, send)

    async def _answer(self, scope: Scope, data: Any, clean: bool = True) -> Any:
        chat = self.chat
        key = await chat.throttle(chat.authenticate(_header(scope, b"authorization")))
        try:
            context = None if clean else {"clean_text": False}  # nothing to clean: skip the walk over the body
            request = ChatCompletionRequest.model_validate(data, from_attributes=True, context=context)  # as FastAPI
        except ValidationError as exc:
            errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
            raise RequestValidationError(errors, body=data) from None
        state = scope.setdefault("state", {})
        fields: dict[str, Any] = state.get("log", {})
        return await chat.handle(request, key, fields)

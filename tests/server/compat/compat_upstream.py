"""A scripted OpenAI-style upstream on 127.0.0.1 for the client-compatibility suite.

It answers each request the way a provider would, from the request alone, and counts requests per
``model`` (so a test can tell how many times a run reached it):

- ``model: fail``: HTTP 500 every time;
- ``tools`` and the last message is not a tool result: a call of the forced tool (``tool_choice``),
  else the first one, with arguments that validate against the tool's parameter schema;
- a tool result in the conversation (a last message with role ``tool``, or a tier's transcript line
  ``[tool result ID]``, as podium shows tool results to a tier's workers): ``"It is <result> there."``;
- ``response_format`` ``json_schema``: an instance of the schema; ``json_object``: ``{"name": "Ada", "age": 36}``;
- otherwise :data:`REPLY`.

Streams (``stream: true``) send the same answer in 5-character deltas, then the usage when asked.
``model: priced`` reports OpenRouter's ``usage.cost`` (:data:`PROVIDER_COST`).
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REPLY = "Upstream says hello."
PROVIDER_COST = 0.0123
USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


@dataclass
class Upstream:
    url: str = ""
    counts: Counter[str] = field(default_factory=Counter)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, body: dict[str, Any]) -> None:
        with self.lock:
            self.counts[str(body.get("model"))] += 1
            self.bodies.append(body)

    def last(self, model: str) -> dict[str, Any]:
        """The last body sent for ``model``."""
        return next(b for b in reversed(self.bodies) if b.get("model") == model)


def instance(schema: dict[str, Any], defs: dict[str, Any], name: str = "") -> Any:
    """A small value that validates against ``schema`` (enough of JSON Schema for the clients' schemas)."""
    if "$ref" in schema:
        return instance(defs[schema["$ref"].rsplit("/", 1)[-1]], defs, name)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return instance(options[0], defs, name)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if kind == "object":
        props = schema.get("properties", {})
        return {k: instance(v, defs, k) for k, v in props.items()}
    if kind == "array":
        return [instance(schema.get("items", {"type": "string"}), defs, name)]
    if kind == "integer":
        return 36 if name == "age" else 1
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    return {"name": "Ada", "city": "Paris"}.get(name, "x")


def tool_result(last: dict[str, Any]) -> str | None:
    """The tool result the model is answering from, if any."""
    if last.get("role") == "tool":
        return str(last.get("content"))
    text = last.get("content") if isinstance(last.get("content"), str) else ""
    match = re.search(r"\[tool result [^\]]*\]\n([^\n]*)", text or "")
    return match.group(1) if match else None


def message_for(body: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The assistant message and finish reason for a request."""
    messages = body.get("messages") or [{}]
    result = tool_result(messages[-1])
    if body.get("tools") and result is None:
        choice = body.get("tool_choice")
        forced = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
        tool = next((t for t in body["tools"] if t["function"]["name"] == forced), body["tools"][0])["function"]
        schema = tool.get("parameters") or {"type": "object", "properties": {}}
        args = json.dumps(instance(schema, schema.get("$defs", {})))
        call = {"id": "call_1", "type": "function", "function": {"name": tool["name"], "arguments": args}}
        return {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
    if result is not None:
        return {"role": "assistant", "content": f"It is {result} there."}, "stop"
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        schema = fmt["json_schema"].get("schema", {})
        return {"role": "assistant", "content": json.dumps(instance(schema, schema.get("$defs", {})))}, "stop"
    if fmt.get("type") == "json_object":
        return {"role": "assistant", "content": json.dumps({"name": "Ada", "age": 36})}, "stop"
    return {"role": "assistant", "content": REPLY}, "stop"


def usage_for(body: dict[str, Any]) -> dict[str, Any]:
    return {**USAGE, "cost": PROVIDER_COST} if body.get("model") == "priced" else dict(USAGE)


def stream_events(body: dict[str, Any]) -> list[dict[str, Any]]:
    message, finish = message_for(body)
    text = message.get("content") or ""
    events: list[dict[str, Any]] = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
    events += [{"choices": [{"index": 0, "delta": {"content": text[i : i + 5]}}]} for i in range(0, len(text), 5)]
    if message.get("tool_calls"):
        calls = [{"index": 0, **message["tool_calls"][0]}]
        events.append({"choices": [{"index": 0, "delta": {"tool_calls": calls}}]})
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append({"choices": [], "usage": usage_for(body)})
    base = {"id": "up-1", "object": "chat.completion.chunk", "created": 0, "model": body.get("model")}
    return [{**base, **e} for e in events]


@contextmanager
def compat_upstream() -> Iterator[Upstream]:
    """The running upstream (its ``url`` ends in ``/v1``) for the duration of the block."""
    upstream = Upstream()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            upstream.record(body)
            if body.get("model") == "fail":
                return self.send(500, "application/json", b'{"error": {"message": "upstream is down"}}')
            if body.get("stream"):
                sse = "".join(f"data: {json.dumps(e)}\n\n" for e in stream_events(body)) + "data: [DONE]\n\n"
                return self.send(200, "text/event-stream", sse.encode())
            message, finish = message_for(body)
            answer = {"id": "up-1", "object": "chat.completion", "created": 0, "model": body.get("model")}
            answer |= {"choices": [{"index": 0, "message": message, "finish_reason": finish}]}
            self.send(200, "application/json", json.dumps(answer | {"usage": usage_for(body)}).encode())

        def send(self, status: int, kind: str, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    upstream.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield upstream
    finally:
        server.shutdown()
        server.server_close()

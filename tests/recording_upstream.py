"""A real OpenAI-style upstream on 127.0.0.1 that records every request (body and headers) and answers
like a provider would: ``tool_calls`` when it was given tools, a JSON object when asked for one,
else a fixed text; with OpenRouter-style ``usage.cost`` when the request's model is ``priced``."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REPLY = "Upstream says hello."
PROVIDER_COST = 0.0123


@dataclass
class Recorded:
    url: str
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)


def answer(body: dict[str, Any]) -> dict[str, Any]:
    """The chat.completion this upstream sends for ``body``."""
    message: dict[str, Any] = {"role": "assistant", "content": REPLY}
    finish = "stop"
    if body.get("tools"):
        name = body["tools"][0]["function"]["name"]
        call = {"id": "call_1", "type": "function", "function": {"name": name, "arguments": '{"city": "Paris"}'}}
        message, finish = {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
    elif (body.get("response_format") or {}).get("type") in ("json_object", "json_schema"):
        message["content"] = json.dumps({"name": "Ada", "age": 36})
    usage: dict[str, Any] = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    if body.get("model") == "priced":
        usage["cost"] = PROVIDER_COST
    return {
        "id": "up-1",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage,
    }


@contextmanager
def recording_upstream() -> Iterator[Recorded]:
    """The upstream's base URL (``.../v1``) and what it received, for the duration of the block."""
    recorded = Recorded(url="")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            recorded.bodies.append(body)
            recorded.headers.append({k.lower(): v for k, v in self.headers.items()})
            if body.get("stream"):
                return self._stream(body)
            data = json.dumps(answer(body)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, body: dict[str, Any]) -> None:
            full = answer(body)
            text = full["choices"][0]["message"]["content"] or ""
            events = [
                {"choices": [{"index": 0, "delta": {"content": text[i : i + 5]}}]} for i in range(0, len(text), 5)
            ]
            events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            events.append({"choices": [], "usage": full["usage"]})
            data = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
            raw = data.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    recorded.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield recorded
    finally:
        server.shutdown()
        server.server_close()

"""The web trace viewer: one static page (``podium/static/viewer.*``) and a small JSON API.

No dependencies: :func:`make_server` serves it with the standard library (``podium ui``), and
:func:`asgi_app` returns a plain ASGI application that a FastAPI/Starlette server can mount::

    app.mount("/ui", podium.traces.viewer.asgi_app(store))      # then open /ui/

Routes (relative to where it is mounted)::

    GET /                  the page
    GET /static/<file>     its script and stylesheet
    GET /api/runs          runs, newest first; ?status= &model= &since= &until= &q= &limit= &offset=
    GET /api/runs/<id>     one run with its turns (prompts and responses included)
    GET /api/stats         per-model stats; ?since= &until=
    GET /api/models        the models seen in stored turns (for filters)

Traces hold prompts and answers: bind to 127.0.0.1 (the default) or put it behind authentication.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ..errors import UsageError
from ..hosts import host_allowed, host_name
from ..scrub import scrub_value
from .store import Store

STATIC = {
    "viewer.html": "text/html; charset=utf-8",
    "viewer.js": "text/javascript; charset=utf-8",
    "viewer.css": "text/css; charset=utf-8",
}
HEADERS = [
    ("X-Content-Type-Options", "nosniff"),
    ("Cache-Control", "no-store"),
    ("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
]
MAX_LIMIT = 500

Response = tuple[int, str, bytes]


def _json(status: int, body: Any) -> Response:
    return status, "application/json", json.dumps(scrub_value(body)).encode()


def _static(name: str) -> Response:
    if name not in STATIC:
        return _json(404, {"error": f"no static file {name!r}"})
    return 200, STATIC[name], (resources.files("podium") / "static" / name).read_bytes()


def _limit(params: dict[str, str]) -> tuple[int, int]:
    try:
        limit, offset = int(params.get("limit", 100)), int(params.get("offset", 0))
    except ValueError:
        raise UsageError("limit and offset must be integers") from None
    if not 1 <= limit <= MAX_LIMIT or offset < 0:
        raise UsageError(f"limit must be 1..{MAX_LIMIT} and offset >= 0")
    return limit, offset


def _runs(store: Store, params: dict[str, str]) -> Response:
    filters = {k: params.get(k) or None for k in ("status", "model", "since", "until")}
    filters["query"] = params.get("q") or None
    limit, offset = _limit(params)
    runs = store.runs(limit=limit, offset=offset, **filters)
    return _json(200, {"runs": runs, "total": store.count(**filters), "limit": limit, "offset": offset})


def _run(store: Store, run_id: str) -> Response:
    run = store.run(run_id)
    return _json(200, run) if run else _json(404, {"error": f"no stored run with id {run_id!r}"})


def handle(store: Store, method: str, path: str, params: dict[str, str]) -> Response:
    """Answer one request; ``path`` is relative to the viewer's root. Never raises for bad input."""
    from .reports import model_stats

    if method not in ("GET", "HEAD"):
        return _json(405, {"error": "only GET is supported"})
    try:
        if path in ("/", "/index.html"):
            return _static("viewer.html")
        if path.startswith("/static/"):
            return _static(path.removeprefix("/static/"))
        if path == "/api/runs":
            return _runs(store, params)
        if path.startswith("/api/runs/"):
            return _run(store, unquote(path.removeprefix("/api/runs/")))
        if path == "/api/stats":
            return _json(
                200,
                {"models": model_stats(store, since=params.get("since") or None, until=params.get("until") or None)},
            )
        if path == "/api/models":
            return _json(200, {"models": [m["model"] for m in model_stats(store)]})
    except UsageError as exc:
        return _json(400, {"error": str(exc)})
    return _json(404, {"error": f"no route {path!r}"})


REQUEST_TIMEOUT_S = 10  # a client that sends its request this slowly is dropped (slow-header attacks)


class _Handler(BaseHTTPRequestHandler):
    store: Store
    hosts: frozenset[str] = frozenset()
    server_version = "podium-viewer"
    timeout = REQUEST_TIMEOUT_S

    def _respond(self, head_only: bool) -> None:
        url = urlsplit(self.path)
        if not host_allowed(self.headers.get("Host"), self.hosts):  # DNS rebinding: see podium.hosts
            status, ctype, body = _json(421, {"error": "this viewer only answers requests for its own host name"})
        else:
            status, ctype, body = handle(self.store, self.command, url.path, dict(parse_qsl(url.query)))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in HEADERS:
            self.send_header(name, value)
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._respond(False)

    def do_HEAD(self) -> None:
        self._respond(True)

    def do_POST(self) -> None:
        self._respond(False)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the CLI prints the URL once
        pass


def make_server(store: Store, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A threaded stdlib HTTP server for the viewer (port 0 picks a free port); call serve_forever().

    It answers only requests whose ``Host`` is a loopback name, an IP address or ``host`` (see
    :mod:`podium.hosts`).
    """
    handler = type("ViewerHandler", (_Handler,), {"store": store, "hosts": frozenset({host_name(host)})})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def asgi_app(store: Store | None = None) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The viewer as an ASGI app (mountable in FastAPI/Starlette). ``store`` defaults to Store.open()."""
    the_store = store or Store.open()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        root, path = scope.get("root_path", ""), scope["path"]
        if root and path.startswith(root):
            path = path[len(root) :]
        if path == "":
            await _send(send, 307, "text/plain", b"", [("location", f"{root}/")])
            return
        params = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        status, ctype, body = await asyncio.to_thread(handle, the_store, scope["method"], path, params)
        await _send(send, status, ctype, b"" if scope["method"] == "HEAD" else body)

    return app


async def _send(send: Send, status: int, ctype: str, body: bytes, extra: list[tuple[str, str]] | None = None) -> None:
    headers = [("content-type", ctype), ("content-length", str(len(body))), *HEADERS, *(extra or [])]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
        }
    )
    await send({"type": "http.response.body", "body": body})

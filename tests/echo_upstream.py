"""A real OpenAI-style upstream on 127.0.0.1 that rejects every call and echoes the caller's
``Authorization`` header (and the bare token) in its error body, as some providers do."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class EchoAuth(BaseHTTPRequestHandler):
    """POST: ``status`` (500 unless the path holds /401/) with the Authorization header in the body."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        auth = self.headers.get("Authorization", "")
        token = auth.split()[-1] if auth else ""
        message = f'invalid key; Authorization: {auth}; token={token}; {{"api_key": "{token}"}}'
        body = json.dumps({"error": {"message": message}}).encode()
        self.send_response(401 if "/401/" in self.path else 500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def echo_upstream() -> Iterator[str]:
    """The server's base URL (``.../v1``), for the duration of the block."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoAuth)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()

"""`podium traces audit` is exact: real runs against 127.0.0.1 decide what counts as data leaving.

A connection that was never made sends nothing; a server that answered (even with an error) got
the request; `local` is inside every region unless --local-outside. Runs go through the real CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import free_port


def podium(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "podium", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
        stdin=subprocess.DEVNULL,
    )


class Failing(BaseHTTPRequestHandler):
    """Reads the whole request, then answers 400: the data reached the server."""

    received: list[bytes] = []

    def do_POST(self) -> None:
        Failing.received.append(self.rfile.read(int(self.headers.get("content-length", 0))))
        body = b'{"error": {"message": "bad request"}}'
        self.send_response(400)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def failing_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def pool_file(tmp_path: Path, base_url: str, region: str) -> str:
    path = tmp_path / f"pool-{region}.yaml"
    path.write_text(f"""name: remote-{region}
models:
  - name: far-{region}
    backend: openai
    base_url: {base_url}
    model: m
    region: {region}
    max_retries: 0
    connect_timeout_s: 1
  - name: here
    backend: scripted
    region: local
    replies: ["42"]
    roles: [worker]
defaults:
  worker: far-{region}
""")
    return str(path)


def audit(*args: str) -> tuple[int, list[dict]]:
    proc = podium("traces", "audit", "--json", *args)
    assert "Traceback" not in proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_call_that_never_connected_is_not_data_leaving(tmp_path: Path) -> None:
    dead = pool_file(tmp_path, f"http://127.0.0.1:{free_port()}/v1", "us")
    run = json.loads(
        podium("ask", "--pool", dead, "--exclude", "here", "--coordinator", "fixed", "--json", "hi").stdout
    )
    assert run["status"] == "failed" and "ConnectError" in run["turns"][0]["error"]
    assert audit("--allowed-regions", "eu") == (0, [])


def test_call_the_server_received_counts_even_when_it_failed(tmp_path: Path, failing_server: str) -> None:
    Failing.received.clear()
    pool = pool_file(tmp_path, failing_server, "us")
    run = json.loads(
        podium(
            "ask",
            "--pool",
            pool,
            "--exclude",
            "here",
            "--coordinator",
            "fixed",
            "--max-turns",
            "1",
            "--json",
            "secret question",
        ).stdout
    )
    assert run["status"] == "failed" and Failing.received and b"secret question" in Failing.received[0]
    code, found = audit("--allowed-regions", "eu")
    assert code == 1 and [f["run_id"] for f in found] == [run["trace_id"]]
    assert found[0]["violations"] == [
        {"turn": 1, "role": "worker", "model": "far-us", "region": "us", "call_failed": True}
    ]
    text = podium("traces", "audit", "--allowed-regions", "eu")
    assert "turn  1 worker   far-us @ us  (call failed after sending)" in text.stdout
    assert audit("--allowed-regions", "eu,us") == (0, [])


def test_local_is_inside_every_region_unless_asked(tmp_path: Path) -> None:
    pool = pool_file(tmp_path, "http://127.0.0.1:9/v1", "us")
    run = json.loads(podium("ask", "--pool", pool, "--coordinator", "fixed:here", "--json", "hi").stdout)
    assert run["status"] == "answered" and run["answer"] == "42"
    assert audit("--allowed-regions", "eu") == (0, [])
    code, found = audit("--allowed-regions", "eu", "--local-outside")
    assert code == 1 and found[0]["violations"][0]["model"] == "here" and found[0]["violations"][0]["region"] == "local"

"""`podium serve` (real uvicorn process) against hostile clients: abandoned streams must not leak upstream
connections or file descriptors (and are stored as interrupted), request heads are bounded in size
and in time. Upstream: the real misbehaving server of tests/faults on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import httpx
import pytest
import yaml

pytest.importorskip("uvicorn", reason="uvicorn is in the 'server' extra")

from faults.helpers import model
from faults.server import FaultServer
from podium_process import PodiumServer, abandon_streams, settle

SLOW = dict(timeout_s=120, first_byte_timeout_s=60, max_retries=0)


def write_pool(folder: Path, url: str) -> Path:
    pool = {
        "name": "hardening",
        "models": [model("drip", url, "drip", **SLOW), model("ok", url, "ok", **SLOW)],
        "defaults": {"worker": "ok", "thinker": "ok", "verifier": "ok", "coordinator": "ok"},
    }
    path = folder / "pool.yaml"
    path.write_text(yaml.safe_dump(pool))
    return path


async def ok_request(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(
            f"{url}/v1/chat/completions", json={"model": "ok", "messages": [{"role": "user", "content": "hi"}]}
        )


async def test_abandoned_streams_release_upstream_connections_and_are_stored(tmp_path: Path) -> None:
    abandoned = 200
    with FaultServer() as upstream, PodiumServer(write_pool(tmp_path, upstream.url), tmp_path) as server:
        assert (await ok_request(server.url)).status_code == 200
        base_upstream, base_sockets = upstream.open_connections, server.sockets()
        await abandon_streams(server.port, "drip", abandoned)
        upstream_after = await settle(lambda: upstream.open_connections, base_upstream)
        # sockets, not all descriptors: SQLite keeps a connection per worker thread (bounded, not a leak)
        sockets_after = await settle(server.sockets, base_sockets)
        assert upstream_after <= base_upstream, f"{upstream_after - base_upstream} upstream connections left open"
        assert sockets_after <= base_sockets, (
            f"server sockets {base_sockets} -> {sockets_after}: {server.describe_fds()}"
        )
        assert (await ok_request(server.url)).status_code == 200  # the pool still serves
        statuses = [status for _, status in server.runs()]
    assert statuses.count("interrupted") == abandoned, statuses[:5]  # every disconnected stream is stored
    assert statuses.count("answered") == 2


async def test_streams_abandoned_at_once_are_stored(tmp_path: Path) -> None:
    with FaultServer() as upstream, PodiumServer(write_pool(tmp_path, upstream.url), tmp_path) as server:
        for model_name in ("drip", "podium"):
            await abandon_streams(server.port, model_name, 60, wait_s=0.0)  # hang up right after sending
        await asyncio.sleep(1.0)
        assert (await ok_request(server.url)).status_code == 200
        runs = server.runs()
    assert len(runs) == 121, f"{121 - len(runs)} runs lost"


def send_slowly(port: int, pieces: list[bytes], gap_s: float, limit_s: float) -> float:
    """Send ``pieces`` ``gap_s`` apart; seconds until the server closed the connection (``limit_s`` if never)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(gap_s)
        for piece in pieces:
            try:
                sock.sendall(piece)
                data = sock.recv(4096)
                if not data or b" 408 " in data:
                    return time.monotonic() - started
            except TimeoutError:
                pass
            except OSError:
                return time.monotonic() - started
            if time.monotonic() - started > limit_s:
                break
    return limit_s


@pytest.fixture(params=["httptools", "h11"])
def guarded_server(request: pytest.FixtureRequest, tmp_path: Path):
    """A server with a 2 s head deadline, on each HTTP parser podium runs (PODIUM_HTTP_PARSER)."""
    env = {"PODIUM_HTTP_PARSER": request.param}
    with (
        FaultServer() as upstream,
        PodiumServer(write_pool(tmp_path, upstream.url), tmp_path, env=env, args=["--header-timeout", "2"]) as server,
    ):
        yield server


def test_slow_request_head_is_cut_off(guarded_server: PodiumServer) -> None:
    head = [b"GET /healthz HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n", *[b"X-Slow: %d\r\n" % i for i in range(30)]]
    took = send_slowly(guarded_server.port, head, gap_s=0.5, limit_s=8.0)
    assert took < 5.0, f"a slow-header client held its connection for {took:.1f}s"
    took = send_slowly(guarded_server.port, [b""] * 20, gap_s=0.5, limit_s=8.0)  # connect and say nothing
    assert took < 5.0


def read_response(sock: socket.socket) -> bytes:
    """One whole response with a Content-Length (h11 sends its head and body in two writes)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(v) for k, _, v in (h.partition(b":") for h in head.split(b"\r\n")) if k.lower() == b"content-length"
    )
    while len(body) < length:
        body += sock.recv(4096)
    return data


def test_each_request_on_a_kept_alive_connection_gets_its_own_head_deadline(guarded_server: PodiumServer) -> None:
    # Requests 1.2 s apart on one connection outlast the first 2 s deadline and are all answered;
    # silence after the last answer is cut about 2 s later, not at the first deadline and not at
    # uvicorn's 5 s keep-alive (the deadline is re-armed per response: podium.server.http).
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with socket.create_connection(("127.0.0.1", guarded_server.port)) as sock:
        sock.settimeout(5)
        for i in range(4):
            if i:
                time.sleep(1.2)
            sock.sendall(request)
            assert read_response(sock).startswith(b"HTTP/1.1 200"), f"request {i + 1} not answered"
        answered = time.monotonic()
        sock.settimeout(0.1)
        while True:
            try:
                if not sock.recv(4096):
                    break
            except TimeoutError:
                assert time.monotonic() - answered < 4.5, "the idle connection was never cut"
            except OSError:
                break
        assert 1.8 <= time.monotonic() - answered < 4.5


def test_huge_request_head_is_refused_without_memory_growth(guarded_server: PodiumServer) -> None:
    before = guarded_server.rss_kib()
    status = b""
    with socket.create_connection(("127.0.0.1", guarded_server.port)) as sock:
        sock.settimeout(10)
        try:
            sock.sendall(
                b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * (16 * 1024 * 1024) + b"\r\n\r\n"
            )
        except OSError:
            pass  # the server hung up mid-header: refused
        try:
            status = sock.recv(64)
        except OSError:
            pass
    assert not status.startswith(b"HTTP/1.1 200"), status
    growth_mib = (guarded_server.rss_kib() - before) / 1024
    assert growth_mib < 8, f"server memory grew {growth_mib:.0f} MiB for one request head"
    assert httpx.get(f"{guarded_server.url}/healthz", timeout=5).status_code == 200


async def test_keyless_server_refuses_foreign_host_names(guarded_server: PodiumServer) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        rebinding = await client.get(
            f"{guarded_server.url}/v1/models", headers={"Host": f"evil.example:{guarded_server.port}"}
        )
        assert rebinding.status_code == 421 and rebinding.json()["error"]["code"] == "misdirected_request"
        for host in (f"127.0.0.1:{guarded_server.port}", "localhost", f"[::1]:{guarded_server.port}"):
            assert (await client.get(f"{guarded_server.url}/v1/models", headers={"Host": host})).status_code == 200


def test_slow_clients_do_not_block_others(guarded_server: PodiumServer) -> None:
    async def run() -> None:
        slow = [asyncio.open_connection("127.0.0.1", guarded_server.port) for _ in range(50)]
        conns = await asyncio.gather(*slow)
        for _, writer in conns:
            writer.write(b"GET /healthz HTTP/1.1\r\n")
        assert (await ok_request(guarded_server.url)).status_code == 200
        for _, writer in conns:
            writer.close()

    asyncio.run(run())


def test_the_parser_is_chosen_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from podium.errors import ConfigError
    from podium.server.http import GuardedH11Protocol, GuardedHttpToolsProtocol, uvicorn_options

    monkeypatch.delenv("PODIUM_HTTP_PARSER", raising=False)
    assert issubclass(uvicorn_options("info", 3.0)["http"], GuardedHttpToolsProtocol)
    assert uvicorn_options("info", 3.0)["http"].head_timeout_s == 3.0
    monkeypatch.setenv("PODIUM_HTTP_PARSER", "h11")
    assert issubclass(uvicorn_options("info")["http"], GuardedH11Protocol)
    monkeypatch.setenv("PODIUM_HTTP_PARSER", "zttp")
    with pytest.raises(ConfigError, match="PODIUM_HTTP_PARSER"):
        uvicorn_options("info")

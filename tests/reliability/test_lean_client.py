"""LeanClient.post_json (podium's upstream calls) against a raw HTTP/1.1 server on 127.0.0.1: the bytes
on the wire and the response are those of httpx's own ``build_request`` + ``send``, cookies go round
trip, and a client with hooks, auth or proxies takes httpx's own path."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from podium.backends._lean_client import LeanClient, lean_client

BODY = {"model": "m", "messages": [{"role": "user", "content": "héllo \u2713"}], "max_tokens": 5}
TIMEOUT = httpx.Timeout(5.0, connect=2.0)


class Recorder:
    """A raw server that keeps each request's bytes; its first answer sets a cookie."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                self.requests.append(head + await reader.readexactly(length))
                cookie = b"set-cookie: lb=node-7; Path=/\r\n" if len(self.requests) == 1 else b""
                body = b'{"ok": true}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + cookie
                    + b"content-length: %d\r\n\r\n" % len(body)
                    + body
                )
                await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def recorder() -> AsyncIterator[tuple[Recorder, httpx.URL]]:
    rec = Recorder()
    server = await asyncio.start_server(rec.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield rec, httpx.URL(f"http://127.0.0.1:{port}/v1/chat/completions")
    finally:
        server.close()


async def call(client: httpx.AsyncClient, url: httpx.URL, mode: str) -> tuple[int, bytes, dict[str, str]]:
    """One post of BODY: ``read`` (post_json_read), ``post`` (post_json) or ``httpx`` (build_request + send)."""
    headers = {"Authorization": "Bearer sk-test", "X-Extra": "1"}
    if mode == "read":
        assert isinstance(client, LeanClient)
        reply = await client.post_json_read(url, BODY, headers, TIMEOUT, 1 << 20)
        assert reply.url == url
        return reply.status, reply.body, dict(httpx.Headers(reply.headers))
    if mode == "post":
        assert isinstance(client, LeanClient)
        response = await client.post_json(url, BODY, headers, TIMEOUT)
    else:
        request = client.build_request("POST", url, json=BODY, headers=headers, timeout=TIMEOUT)
        response = await client.send(request, stream=True)
    try:
        body = await response.aread()
    finally:
        await response.aclose()
    assert response.request.url == url
    return response.status_code, body, dict(response.headers)


async def test_post_json_sends_what_httpx_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    seen: dict[str, tuple[list[bytes], list[Any]]] = {}
    for mode in ("read", "post", "httpx"):
        async with recorder() as (rec, url), lean_client() as client:
            assert isinstance(client, LeanClient) and client._direct()
            answers = [await call(client, url, mode) for _ in range(3)]
            wire = [re.sub(rb"127\.0\.0\.1:\d+", b"HOST", r) for r in rec.requests]  # each its own port
            seen[mode] = (wire, answers)
            assert client.cookies.get("lb") == "node-7"  # kept from the first answer
    assert seen["read"] == seen["post"] == seen["httpx"]  # the same bytes on the wire, the same answers
    wire = seen["read"][0]
    assert b"cookie: lb=node-7" in wire[1].lower() and b"cookie" not in wire[0].lower()
    assert b"Authorization: Bearer sk-test" in wire[0] and "héllo".encode() in wire[0]


async def test_clients_with_hooks_auth_or_proxies_take_httpx_path() -> None:
    hooked: list[str] = []

    async def hook(request: httpx.Request) -> None:
        hooked.append(str(request.url))

    async with recorder() as (rec, url):
        async with lean_client(event_hooks={"request": [hook]}) as client:
            assert not client._direct()
            await call(client, url, "read")
        assert hooked == [str(url)]
        async with lean_client(auth=("user", "pass")) as client:
            assert not client._direct()
            await call(client, url, "read")
        assert b"authorization: basic" in rec.requests[-1].lower().replace(b"bearer sk-test", b"")
        proxied = {"http://127.0.0.1": httpx.AsyncHTTPTransport(proxy="http://127.0.0.1:9")}
        async with lean_client(mounts=proxied) as client:
            assert not client._direct()  # a mounted transport (a proxy): httpx's own path


async def test_proxy_from_the_environment_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP(S)_PROXY / ALL_PROXY in the environment send upstream calls through the proxy, as httpx
    and the OpenAI SDK do (httpx mounts them only when it builds its own transport)."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with recorder() as (proxy, proxy_url):
        monkeypatch.setenv("HTTP_PROXY", f"http://{proxy_url.host}:{proxy_url.port}")
        target = httpx.URL("http://127.0.0.1:9/v1/chat/completions")  # nothing listens there
        async with lean_client() as client:
            status, body, _ = await call(client, target, "read" if isinstance(client, LeanClient) else "httpx")
        assert status == 200 and body == b'{"ok": true}'
        assert proxy.requests and proxy.requests[0].startswith(b"POST http://127.0.0.1:9/v1/chat/completions ")
    async with lean_client(trust_env=False) as client:  # trust_env=False: no proxies, the lean path
        assert isinstance(client, LeanClient) and client._direct()


async def test_reused_headers_send_what_httpx_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    """post_json builds a post's headers once per URL and header set, then fills in each body's length:
    bodies of other lengths, other header sets (overriding Content-Type or Host), the client's headers
    changed between calls, and a caller's own Content-Length still give httpx's bytes on the wire."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    bodies = [BODY, {"messages": [{"content": "x" * 1000}]}, {"a": None, "b": [1.5, True]}, BODY]
    header_sets = [
        {"Authorization": "Bearer sk-test"},
        {"Authorization": "Bearer sk-test", "Content-Type": "application/json; charset=utf-8"},
        {"Host": "example.test", "X-Extra": "2"},
    ]
    seen: dict[str, list[bytes]] = {}
    for mode in ("read", "post", "httpx"):
        async with recorder() as (rec, url), lean_client() as client:
            assert isinstance(client, LeanClient)
            for round_ in range(2):
                if round_:
                    client.headers["X-Client"] = "changed"
                for headers in header_sets:
                    for body in bodies:
                        client.cookies.jar.clear()  # the recorder's cookie would send every call httpx's way
                        if mode == "read":
                            reply = await client.post_json_read(url, body, headers, TIMEOUT, 1 << 20)
                            assert reply.url == url and reply.body == b'{"ok": true}'
                            continue
                        if mode == "post":
                            response = await client.post_json(url, body, headers, TIMEOUT)
                        else:
                            request = client.build_request("POST", url, json=body, headers=headers, timeout=TIMEOUT)
                            response = await client.send(request, stream=True)
                        await response.aread()
                        await response.aclose()
                        assert response.request.url == url
            seen[mode] = [re.sub(rb"127\.0\.0\.1:\d+", b"HOST", r) for r in rec.requests]
            if mode != "httpx":
                assert len(client._plans) == 6
    assert seen["read"] == seen["post"] == seen["httpx"] and len(seen["read"]) == 24
    assert b"X-Client: changed" in seen["read"][-1] and b"Host: example.test" in seen["read"][-1]
    async with recorder() as (rec, url), lean_client() as client:
        assert isinstance(client, LeanClient)
        with pytest.raises(httpx.LocalProtocolError):  # a wrong Content-Length of the caller's: refused, as h11 does
            await client.post_json(url, BODY, {"Content-Length": "3"}, TIMEOUT)
        with pytest.raises(httpx.LocalProtocolError):
            await client.post_json_read(url, BODY, {"Content-Length": "3"}, TIMEOUT, 1 << 20)
        assert rec.requests == []


def test_without_httptools_the_default_client_is_used(tmp_path: Any) -> None:
    """An install without httptools (it comes with podium and uvicorn[standard], but may be absent)
    gets httpx's default client, which still posts to a real server on 127.0.0.1."""
    import os
    import subprocess
    import sys

    script = """
import asyncio, sys
sys.modules["httptools"] = None  # import httptools now raises ImportError
import httpx
from podium.backends.transport import LeanTransport
from podium.backends._lean_client import lean_client
from podium.errors import MissingDependencyError

async def main():
    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with lean_client() as client:
        assert type(client) is httpx.AsyncClient, type(client)
        response = await client.post(f"http://127.0.0.1:{port}/", json={"a": 1})
        assert response.status_code == 200 and response.content == b"ok", response
    try:
        LeanTransport()
    except MissingDependencyError as exc:
        assert "httptools" in str(exc) and "podium[server]" not in str(exc), str(exc)  # a core dependency now
    else:
        raise AssertionError("LeanTransport without httptools")
    print("fallback ok")

async def answer(reader, writer):
    await reader.readuntil(b"\\r\\n\\r\\n")
    await reader.readexactly(7)
    writer.write(b"HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\n\\r\\nok")
    await writer.drain()
    writer.close()

asyncio.run(main())
"""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0 and "fallback ok" in proc.stdout, proc.stderr[-2000:]

"""The lean transport's HTTP/1.1 wire work (httptools, request head as bytes) against httpx's own
transport (httpcore + h11) on the same raw server on 127.0.0.1: every response below, well-formed or
not, must give the same status, headers and body, or the same httpx exception; requests must be the
same bytes on the wire; and connections are reused exactly when httpcore reuses them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from podium.backends.transport import LeanTransport

BIG = b"x" * 200_000
RESPONSES: dict[bytes, tuple[bytes, bool]] = {  # path -> (raw response, close the connection after it)
    b"/length": (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello", False),
    b"/chunked": (
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
        b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
        False,
    ),
    b"/until-close": (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it", True),
    b"/http10": (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", True),
    b"/close-header": (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", True),
    b"/continue": (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes", False),
    b"/no-content": (b"HTTP/1.1 204 No Content\r\nX-B: 2\r\n\r\n", False),
    b"/not-modified": (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", False),
    b"/ows": (b"HTTP/1.1 200 OK\r\nX-Space:   padded value  \r\nContent-Length: 0\r\n\r\n", False),
    b"/empty-reason": (b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", False),
    b"/big-body": (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(BIG), BIG), False),
    b"/short-length": (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", True),
    b"/short-chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", True),
    b"/half-head": (b"HTTP/1.1 200 OK\r\nContent-Le", True),
    b"/silent": (b"", True),
    b"/garbage": (b"HELLO WORLD\r\n\r\n", True),
    b"/bad-length": (b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n", True),
    b"/huge-head": (b"HTTP/1.1 200 OK\r\nX-Big: " + BIG + b"\r\nContent-Length: 0\r\n\r\n", True),
}


class RawServer:
    """Answers each request with the canned bytes its path names, written in ``piece``-byte writes."""

    def __init__(self, piece: int) -> None:
        self.piece, self.connections, self.requests = piece, 0, []
        self.heads_with_body = False  # misbehave: answer HEAD with the body too
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                lower = raw.lower()
                if b"transfer-encoding: chunked" in lower:
                    while True:
                        size_line = await reader.readuntil(b"\r\n")
                        raw += size_line
                        size = int(size_line.split(b";")[0], 16)
                        raw += await reader.readexactly(size + 2)
                        if size == 0:
                            break
                elif b"content-length:" in lower:
                    length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
                    raw += await reader.readexactly(length)
                self.requests.append(raw)
                response, close = RESPONSES.get(raw.split(b" ")[1], RESPONSES[b"/length"])
                if raw.startswith(b"HEAD") and not self.heads_with_body:
                    response = response[: response.index(b"\r\n\r\n") + 4]
                for at in range(0, len(response), self.piece):
                    writer.write(response[at : at + self.piece])
                    await writer.drain()
                if close:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture(params=[1 << 20, 7], ids=["whole", "7-byte-pieces"])
async def raw_server(request: pytest.FixtureRequest) -> AsyncIterator[tuple[RawServer, str]]:
    srv = RawServer(request.param)
    srv.server = await asyncio.start_server(srv.handle, "127.0.0.1", 0)
    yield srv, f"http://127.0.0.1:{srv.server.sockets[0].getsockname()[1]}"
    srv.server.close()


async def outcome(client: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> tuple[Any, ...]:
    try:
        response = await client.request(method, url, **kwargs)
    except Exception as exc:  # httpcore lets h11's own LocalProtocolError through for a short body
        return ("error", type(exc).__name__)
    return (response.status_code, response.reason_phrase, response.headers.raw, response.content)


async def both(server: RawServer, base: str, calls: list[tuple[str, str]], **kwargs: Any) -> list[Any]:
    """Each call's outcome, the connections it took and the request bytes, on each transport."""
    results = []
    timeout = httpx.Timeout(5.0)
    for transport in (httpx.AsyncHTTPTransport(), LeanTransport()):
        server.connections, server.requests = 0, []
        async with httpx.AsyncClient(transport=transport, timeout=timeout) as client:
            got = [await outcome(client, method, base + path, **kwargs) for method, path in calls]
        results.append((got, server.connections, server.requests))
    return results


@pytest.mark.parametrize("path", [p.decode() for p in RESPONSES])
async def test_each_response_as_httpcore_reads_it(raw_server: tuple[RawServer, str], path: str) -> None:
    server, base = raw_server
    httpcore_side, lean_side = await both(server, base, [("GET", path), ("GET", "/length")])
    assert lean_side == httpcore_side
    assert lean_side[0][1] == (200, "OK", [(b"Content-Type", b"text/plain"), (b"Content-Length", b"5")], b"hello")


async def test_head_responses_have_no_body_and_keep_the_connection(raw_server: tuple[RawServer, str]) -> None:
    server, base = raw_server
    calls = [("HEAD", "/length"), ("HEAD", "/chunked"), ("GET", "/length"), ("HEAD", "/length")]
    httpcore_side, lean_side = await both(server, base, calls)
    assert lean_side == httpcore_side
    assert lean_side[0][0][3] == b"" and lean_side[1] == 1


async def test_posted_bodies_are_the_same_bytes_on_the_wire(raw_server: tuple[RawServer, str]) -> None:
    server, base = raw_server
    for kwargs in ({"json": {"a": "é", "b": [1, 2]}}, {"content": b"raw bytes"}, {"content": b""}):
        httpcore_side, lean_side = await both(server, base, [("POST", "/length")], **kwargs)
        assert lean_side == httpcore_side


async def test_streamed_request_bodies_are_chunked_as_h11_chunks_them(raw_server: tuple[RawServer, str]) -> None:
    server, base = raw_server
    sides = []
    for transport in (httpx.AsyncHTTPTransport(), LeanTransport()):
        server.requests = []

        async def parts() -> AsyncIterator[bytes]:
            for part in (b"first", b"", b"second part"):
                yield part

        async with httpx.AsyncClient(transport=transport) as client:
            sides.append((await outcome(client, "POST", base + "/length", content=parts()), server.requests))
    assert sides[1] == sides[0]
    assert sides[1][1][0].endswith(b"5\r\nfirst\r\nb\r\nsecond part\r\n0\r\n\r\n")


@pytest.mark.parametrize(
    "headers",
    [{"x-bad": "a\nb"}, {"x-bad": "a\rb"}, {"x-bad": " lead"}, {"bad name": "v"}, {"content-length": "9"}],
    ids=["lf", "cr", "leading-space", "name-space", "wrong-length"],
)
async def test_invalid_requests_are_refused_before_the_wire(
    raw_server: tuple[RawServer, str], headers: dict[str, str]
) -> None:
    server, base = raw_server
    httpcore_side, lean_side = await both(server, base, [("POST", "/length")], headers=headers, content=b"abc")
    assert lean_side[0] == httpcore_side[0] == [("error", "LocalProtocolError")]
    assert lean_side[2] == []  # nothing reached the server


async def test_bytes_after_a_response_drop_the_connection(raw_server: tuple[RawServer, str]) -> None:
    """A server that sends a body after a HEAD response's head: httpcore reads those bytes as the next
    response's start (an error on the next request); the lean transport drops the connection."""
    server, base = raw_server
    server.heads_with_body = True
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        for _ in range(3):
            assert (await client.head(base + "/chunked")).status_code == 201
            assert (await client.get(base + "/length")).content == b"hello"

"""podium's lean HTTP/1.1 transport against a real server on 127.0.0.1: keep-alive, stale
connections, httpx's error types, the pool limit and cancellation that leaves nothing checked out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest

from podium.backends._lean_client import BodyTooLarge, LeanClient
from podium.backends.transport import LeanTransport

OK = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"ok": 1}\r\n'
CHUNKED = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    b"8\r\ndata: a\n\r\n8\r\ndata: b\n\r\n0\r\n\r\n"
)


class Upstream:
    """A raw HTTP/1.1 server whose behaviour per request is chosen by the request path."""

    def __init__(self) -> None:
        self.connections = 0
        self.open = 0
        self.peak = 0
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.peak = max(self.peak, self.open)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                await reader.readexactly(length)
                path = head.split(b" ")[1]
                if path == b"/close":  # answer, then close the kept-alive connection
                    writer.write(OK)
                    await writer.drain()
                    return
                if path == b"/drop":  # close without answering
                    return
                if path.startswith(b"/slow"):
                    await asyncio.sleep(float(path.split(b"/")[2]))
                if path == b"/big":  # 1000 bytes, chunked: no length declared
                    writer.write(
                        CHUNKED.split(b"\r\n\r\n")[0] + b"\r\n\r\n" + b"3e8\r\n" + b"x" * 1000 + b"\r\n0\r\n\r\n"
                    )
                    await writer.drain()
                    continue
                if path == b"/two-parts":  # a chunked body in two writes, 50 ms apart
                    writer.write(CHUNKED.split(b"8\r\ndata: b")[0])
                    await writer.drain()
                    await asyncio.sleep(0.05)
                    writer.write(b"8\r\ndata: b\n\r\n0\r\n\r\n")
                    await writer.drain()
                    continue
                if path == b"/huge":  # 2 MiB in 64 chunks of 32 KiB
                    writer.write(CHUNKED.split(b"\r\n\r\n")[0] + b"\r\n\r\n")
                    for i in range(64):
                        writer.write(b"8000\r\n" + bytes([65 + i % 26]) * 0x8000 + b"\r\n")
                        await writer.drain()
                    writer.write(b"0\r\n\r\n")
                    await writer.drain()
                    continue
                if path == b"/says-big":  # declares 10 MB, sends 3 bytes
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10000000\r\n\r\nabc")
                    await writer.drain()
                    continue
                writer.write(CHUNKED if path == b"/stream" else OK)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = Upstream()
    up.server = await asyncio.start_server(up.handle, "127.0.0.1", 0)
    yield up
    up.server.close()


async def settle(check, seconds: float = 2.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)


async def test_keep_alive_reuses_one_connection(upstream: Upstream) -> None:
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        for _ in range(20):
            r = await client.post(f"{upstream.url}/ok", json={"q": 1})
            assert r.status_code == 200 and r.json() == {"ok": 1}
    assert upstream.connections == 1


async def test_a_connection_the_server_closed_is_not_reused(upstream: Upstream) -> None:
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        assert (await client.post(f"{upstream.url}/close", json={})).status_code == 200
        await asyncio.sleep(0.05)  # the loop sees the EOF
        assert (await client.post(f"{upstream.url}/ok", json={})).status_code == 200
    assert upstream.connections == 2


async def test_streamed_chunks_arrive_in_order(upstream: Upstream) -> None:
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        async with client.stream("POST", f"{upstream.url}/stream", json={}) as r:
            lines = [line async for line in r.aiter_lines() if line]
        assert lines == ["data: a", "data: b"]
        assert (await client.post(f"{upstream.url}/ok", json={})).status_code == 200
    assert upstream.connections == 1  # the streamed response gave its connection back


async def test_what_arrives_while_the_consumer_holds_a_chunk_is_not_lost(upstream: Upstream) -> None:
    """The socket feeds the parser while the consumer is busy: the rest of the body, and its end,
    may arrive before the consumer asks again (a bug seen once: the end was seen, the data dropped)."""
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        for _ in range(3):
            async with client.stream("POST", f"{upstream.url}/two-parts", json={}) as response:
                parts = []
                async for chunk in response.aiter_raw():
                    parts.append(chunk)
                    await asyncio.sleep(0.2)  # the second part and the end arrive meanwhile
            assert b"".join(parts) == b"data: a\ndata: b\n"
        assert upstream.connections == 1  # each read to its end: kept alive


async def test_large_bodies_both_ways_with_a_slow_reader(upstream: Upstream) -> None:
    """8 MiB posted (the socket's buffer fills: the writer waits for it to drain) and 2 MiB read by a
    consumer slower than the socket (reading pauses, then resumes): every byte in order."""
    transport = LeanTransport()
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.post(f"{upstream.url}/ok", content=b"x" * (8 << 20))).status_code == 200
        paused = False
        async with client.stream("POST", f"{upstream.url}/huge", json={}) as response:
            received = bytearray()
            async for chunk in response.aiter_raw():
                received += chunk
                await asyncio.sleep(0.01)
                paused = paused or any(c._read_paused for c in transport._live)
        assert received == b"".join(bytes([65 + i % 26]) * 0x8000 for i in range(64))
        assert paused  # the reader fell behind by more than 256 KiB at least once
        assert upstream.connections == 1


async def test_errors_are_httpx_errors(upstream: Upstream) -> None:
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(f"{upstream.url}/drop", json={})
        with pytest.raises(httpx.ReadTimeout):
            await client.post(f"{upstream.url}/slow/1", json={}, timeout=httpx.Timeout(5, read=0.1))
        with socket_refused() as url, pytest.raises(httpx.ConnectError):
            await client.post(url, json={})
        assert (await client.post(f"{upstream.url}/ok", json={})).status_code == 200


@contextlib.contextmanager
def socket_refused():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield f"http://127.0.0.1:{port}/"


async def test_pool_limit_queues_then_times_out(upstream: Upstream) -> None:
    transport = LeanTransport(max_connections=2)
    async with httpx.AsyncClient(transport=transport) as client:
        results = await asyncio.gather(*(client.post(f"{upstream.url}/slow/0.1", json={}) for _ in range(6)))
        assert all(r.status_code == 200 for r in results)
        assert upstream.peak <= 2
        slow = [asyncio.ensure_future(client.post(f"{upstream.url}/slow/0.5", json={})) for _ in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(httpx.PoolTimeout):
            await client.post(f"{upstream.url}/ok", json={}, timeout=httpx.Timeout(5, pool=0.1))
        await asyncio.gather(*slow)


async def test_repeated_cancellation_leaves_nothing_checked_out(upstream: Upstream) -> None:
    transport = LeanTransport(max_connections=4)
    async with httpx.AsyncClient(transport=transport) as client:
        tasks = [asyncio.ensure_future(client.post(f"{upstream.url}/slow/1", json={})) for _ in range(8)]
        await asyncio.sleep(0.1)
        for _ in range(3):  # cancelled again while unwinding, as Starlette does
            for task in tasks:
                task.cancel()
            await asyncio.sleep(0)
        await asyncio.gather(*tasks, return_exceptions=True)
        assert sum(s.open for s in transport._pools.values()) == 0
        results = await asyncio.gather(*(client.post(f"{upstream.url}/ok", json={}) for _ in range(4)))
        assert all(r.status_code == 200 for r in results)
    await settle(lambda: upstream.open == 0)
    assert upstream.open == 0  # aclose closed every connection


async def test_aclose_closes_connections_in_use(upstream: Upstream) -> None:
    transport = LeanTransport()
    client = httpx.AsyncClient(transport=transport)
    async with client.stream("POST", f"{upstream.url}/stream", json={}):
        await client.aclose()  # the response is still open
    await settle(lambda: upstream.open == 0)
    assert upstream.open == 0


async def test_an_idle_connection_the_server_closes_is_released_at_once(upstream: Upstream) -> None:
    transport = LeanTransport()
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.post(f"{upstream.url}/close", json={})).status_code == 200
        await settle(lambda: not transport._live)
        assert not transport._live  # its socket is closed without waiting for the next request
        assert sum(s.open for s in transport._pools.values()) == 0


def post_read(client: LeanClient, url: str, limit: int = 1 << 20):
    return client.post_json_read(httpx.URL(url), {}, {}, httpx.Timeout(5), limit)


async def test_whole_responses_are_read_on_one_kept_alive_connection(upstream: Upstream) -> None:
    transport = LeanTransport()
    async with LeanClient(transport=transport) as client:
        replies = [await post_read(client, f"{upstream.url}/{path}") for path in ("ok", "stream", "ok", "stream")]
        assert [r.body for r in replies] == [b'{"ok": 1}\r\n', b"data: a\ndata: b\n"] * 2
        assert replies[1].header(b"content-type") == "text/event-stream" and replies[0].status == 200
        assert upstream.connections == 1 and len(transport._live) == 1


async def test_bodies_over_the_limit_drop_their_connection(upstream: Upstream) -> None:
    transport = LeanTransport()
    async with LeanClient(transport=transport) as client:
        for path in ("big", "says-big"):
            with pytest.raises(BodyTooLarge):
                await post_read(client, f"{upstream.url}/{path}", limit=999)
            assert sum(s.open for s in transport._pools.values()) == 0 and not transport._live
        assert len((await post_read(client, f"{upstream.url}/big", limit=1000)).body) == 1000  # at the limit: kept
        assert len(transport._live) == 1
    await settle(lambda: upstream.open == 0)
    assert upstream.connections == 3 and upstream.open == 0


async def test_repeated_cancellation_of_whole_reads_leaves_nothing_checked_out(upstream: Upstream) -> None:
    """post_json_read runs in the caller's task (no isolating task): its cleanup must not await."""
    transport = LeanTransport(max_connections=4)
    async with LeanClient(transport=transport) as client:
        tasks = [asyncio.ensure_future(post_read(client, f"{upstream.url}/slow/1")) for _ in range(8)]
        await asyncio.sleep(0.1)  # four sending or waiting for the head, four waiting for a connection
        for _ in range(3):  # cancelled again while unwinding, as Starlette does
            for task in tasks:
                task.cancel()
            await asyncio.sleep(0)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results)
        assert sum(s.open for s in transport._pools.values()) == 0 and not transport._live
        replies = await asyncio.gather(*(post_read(client, f"{upstream.url}/ok") for _ in range(4)))
        assert all(r.status == 200 for r in replies)
    await settle(lambda: upstream.open == 0)
    assert upstream.open == 0


async def test_each_wait_on_a_kept_alive_connection_keeps_its_own_read_timeout(upstream: Upstream) -> None:
    # Each wait's read timeout on one kept-alive connection is its own: a short one after a long one
    # fires on time, a long one after short ones does not fire at their deadlines (guards any timer
    # shared across a connection's waits; a lazily moved one measured no faster, session 12).
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        assert (await client.post(f"{upstream.url}/ok", json={}, timeout=httpx.Timeout(5, read=30))).status_code == 200
        started = loop.time()
        with pytest.raises(httpx.ReadTimeout):  # after a 30 s wait on this connection: 0.1 s here
            await client.post(f"{upstream.url}/slow/1", json={}, timeout=httpx.Timeout(5, read=0.1))
        assert 0.09 <= loop.time() - started < 0.5
    async with httpx.AsyncClient(transport=LeanTransport()) as client:
        for _ in range(3):  # each with its own 0.15 s deadline, passed while the next waits
            assert (await client.post(f"{upstream.url}/ok", json={}, timeout=httpx.Timeout(5, read=0.15))).is_success
        slow = await client.post(f"{upstream.url}/slow/0.3", json={}, timeout=httpx.Timeout(5, read=1))
        assert slow.status_code == 200  # the earlier deadlines passed while it waited: it was not expired
        started = loop.time()
        with pytest.raises(httpx.ReadTimeout):
            await client.post(f"{upstream.url}/slow/1", json={}, timeout=httpx.Timeout(5, read=0.2))
        assert 0.19 <= loop.time() - started < 0.6

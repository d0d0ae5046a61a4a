"""A lean HTTP/1.1 keep-alive transport for httpx: O(1) per request where httpcore's pool is O(n²).

httpcore's connection pool, on every request and every response close, walks all its connections
(and, for each idle one, all of them again to count the idle ones) and asks each idle connection's
socket whether it is readable (a ``poll`` through anyio's ``get_extra_info``). With 50 requests in
flight to one upstream that is most of the CPU a proxied request costs. This transport keeps, per
origin, a stack of idle connections and a count of open ones: taking or returning a connection is
a pop or a push; a stale connection is recognised without a system call (the event loop has
already fed it EOF, or it has been idle longer than ``keepalive_expiry``).

Semantics kept from httpx/httpcore, so podium's reliability layer sees the same errors:
``ConnectTimeout``/``ConnectError`` (connecting), ``WriteTimeout``/``WriteError`` (sending),
``ReadTimeout``/``ReadError`` (waiting for or reading the response), ``RemoteProtocolError`` (a
malformed response, or the server closing before it), ``PoolTimeout`` (no connection free within
the pool timeout). A request is never retried here. Cleanup is synchronous (abort the socket, free
the slot), so a cancellation, however often repeated, cannot leave a connection checked out.

HTTP/1.1 only (what podium's default client uses). One connection's wire work (the request head
written as bytes, the response parsed by httptools in C rather than h11 in Python, and the checks h11
made) is in :mod:`podium.backends._lean_http`. httpx mounts proxies from the environment
(``HTTP(S)_PROXY``) only when it builds its own transport, so :func:`lean_client` returns httpx's
default client when the environment names a proxy; proxies passed as ``mounts`` are used.

:meth:`LeanTransport.exchange` sends a request already written as bytes and reads its whole
response, for :class:`podium.backends._lean_client.LeanClient` (what :func:`lean_client` returns).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator

import httpx

from podium.backends._lean_http import HTTPTOOLS, Connection, Origin, mapped
from podium.errors import MissingDependencyError

__all__ = ["HTTPTOOLS", "LeanTransport"]


class _Slots:
    """Per origin: idle connections (a stack: the warmest first) and how many are open or opening."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.idle: deque[Connection] = deque()
        self.open = 0
        self.waiters: deque[asyncio.Future[None]] = deque()


class LeanTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 with per-origin keep-alive; see the module doc."""

    def __init__(
        self,
        *,
        max_connections: int = 256,
        max_keepalive_connections: int = 64,
        keepalive_expiry: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not HTTPTOOLS:
            raise MissingDependencyError(
                "httptools is not installed, and podium's upstream HTTP client needs it: pip install 'httptools>=0.6'"
            )
        self.max_connections = max_connections
        self.max_keepalive = max_keepalive_connections
        self.keepalive_expiry = keepalive_expiry
        self._ssl = ssl_context
        self._pools: dict[Origin, _Slots] = {}
        self._live: set[Connection] = set()  # every open connection, idle or in use: aclose closes them all
        self._loop: asyncio.AbstractEventLoop | None = None

    def _slots(self, origin: Origin) -> _Slots:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # connections belong to the loop that opened them: start afresh
            self._drop_all()
            self._loop = loop
        slots = self._pools.get(origin)
        if slots is None:
            slots = self._pools[origin] = _Slots(origin)
        return slots

    def _drop_all(self) -> list[Connection]:
        dropped = list(self._live)
        for conn in dropped:
            conn.abort()
        self._live.clear()
        self._pools.clear()
        return dropped

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.raw_scheme
        if scheme not in (b"http", b"https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}", request=request)
        origin = (scheme, url.host, url.port or (443 if scheme == b"https" else 80))
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        slots = self._slots(origin)
        conn = await self._acquire(slots, origin, timeouts, request)
        try:
            with mapped(request, "write"):
                await conn.send_request(request, timeouts.get("write"))
            with mapped(request, "read"):
                status, reason, headers = await conn.read_head(timeouts.get("read"))
        except BaseException:
            self._discard(slots, conn)
            raise
        return httpx.Response(
            status,
            headers=headers,
            stream=_Body(self, slots, conn, request, timeouts.get("read")),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
        )

    async def exchange(
        self, origin: Origin, data: bytes, close: bool, timeouts: dict[str, float | None], limit: int
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes]:
        """Send a request written as bytes and read its whole response: status, reason, raw headers, body.

        For :meth:`LeanClient.post_json_read`. Every cleanup here is synchronous (the connection goes
        back to the pool or is aborted without an await), so a cancellation, however often repeated,
        cannot interrupt it: callers need no :func:`podium.backends.isolation.isolated` task. A body
        over ``limit`` bytes raises :class:`BodyTooLarge` and drops the connection.
        """
        slots = self._slots(origin)
        conn = await self._acquire(slots, origin, timeouts, None)
        try:
            with mapped(None, "write"):
                await conn.send_bytes(data, close, timeouts.get("write"))
            with mapped(None, "read"):
                read = timeouts.get("read")
                status, reason, headers = await conn.read_head(read)
                body = await conn.read_body(read, limit)
        except BaseException:
            self._discard(slots, conn)
            raise
        self._release(slots, conn)
        return status, reason, headers, body

    async def _acquire(
        self, slots: _Slots, origin: Origin, timeouts: dict[str, float | None], request: httpx.Request | None
    ) -> Connection:
        while True:
            now = time.monotonic()
            while slots.idle:
                conn = slots.idle.pop()
                conn.idle = False
                if conn.usable(now, self.keepalive_expiry):
                    return conn
                self._abort(conn)
                slots.open -= 1
            if slots.open < self.max_connections:
                break
            await self._wait_for_slot(slots, timeouts.get("pool"), request)
        slots.open += 1
        try:
            return await self._connect(origin, timeouts.get("connect"), request)
        except BaseException:
            self._free(slots)
            raise

    async def _wait_for_slot(self, slots: _Slots, timeout: float | None, request: httpx.Request | None) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        slots.waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except BaseException as exc:
            if waiter in slots.waiters:
                slots.waiters.remove(waiter)
            elif waiter.done() and not waiter.cancelled():
                self._wake(slots)  # woken but leaving: pass the free slot on
            if isinstance(exc, TimeoutError):
                raise httpx.PoolTimeout("no connection available within the pool timeout", request=request) from None
            raise

    async def _connect(self, origin: Origin, timeout: float | None, request: httpx.Request | None) -> Connection:
        scheme, host, port = origin
        context = None
        if scheme == b"https":
            if self._ssl is None:
                self._ssl = httpx.create_ssl_context()
            context = self._ssl
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: Connection(origin, loop),
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out", request=request) from None
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from None
        conn.on_close = lambda: self._peer_closed(conn)
        self._live.add(conn)
        return conn

    def _peer_closed(self, conn: Connection) -> None:
        """The server closed ``conn`` or sent it something unasked: if it is idle, drop it now (a busy one sees it when read)."""
        slots = self._pools.get(conn.origin)
        if slots is not None and conn in slots.idle:
            slots.idle.remove(conn)
            self._abort(conn)
            self._free(slots)

    def _release(self, slots: _Slots, conn: Connection) -> None:
        """After a response was read to its end: keep the connection if both sides can go on, else close it."""
        if self._pools.get(slots.origin) is not slots:  # the pool was reset meanwhile
            self._abort(conn)
            return
        if conn.reusable and len(slots.idle) < self.max_keepalive:
            conn.idle_since = now = time.monotonic()
            while slots.idle and now - slots.idle[0].idle_since > self.keepalive_expiry:  # the oldest first
                self._abort(slots.idle.popleft())
                slots.open -= 1
            conn.idle = True
            slots.idle.append(conn)
            self._wake(slots)
            return
        self._discard(slots, conn)

    def _abort(self, conn: Connection) -> None:
        conn.abort()
        self._live.discard(conn)

    def _discard(self, slots: _Slots, conn: Connection) -> None:
        self._abort(conn)
        self._free(slots)

    def _free(self, slots: _Slots) -> None:
        slots.open -= 1
        self._wake(slots)

    @staticmethod
    def _wake(slots: _Slots) -> None:
        while slots.waiters:
            waiter = slots.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def aclose(self) -> None:
        """Close every connection, in use or idle, and wait (briefly) until their sockets are released."""
        dropped = self._drop_all()
        if dropped and asyncio.get_running_loop() is self._loop:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await asyncio.gather(*(c.closed for c in dropped), return_exceptions=True)


class _Body(httpx.AsyncByteStream):
    """The response body, read from the connection as it is iterated; closing hands the connection back."""

    def __init__(
        self, transport: LeanTransport, slots: _Slots, conn: Connection, request: httpx.Request, timeout: float | None
    ) -> None:
        self._transport, self._slots, self._conn = transport, slots, conn
        self._request, self._timeout = request, timeout
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with mapped(self._request, "read"):
            async for chunk in self._conn.body(self._timeout):
                if self._closed:
                    break
                yield chunk

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        conn = self._conn
        if conn.done:
            self._transport._release(self._slots, conn)
        else:  # closed before the end of the body: the connection cannot be reused
            self._transport._discard(self._slots, conn)

"""One HTTP/1.1 client connection for :mod:`podium.backends.transport`: the request written as bytes,
the response parsed by httptools (llhttp, in C) instead of h11's pure-Python state machine.

What h11 checked, this module checks too, with the same httpx exceptions:

* the request: the method, target, header names and values must be valid HTTP/1.1 (one regular
  expression over the head; otherwise ``LocalProtocolError``); a body must match its framing
  (``Content-Length`` exactly, or ``Transfer-Encoding: chunked``, written chunk by chunk; a body
  without either is refused);
* the response: a malformed head or body, a head over :data:`MAX_HEAD_BYTES`, or the peer closing
  before the end of a framed body is a ``RemoteProtocolError``; the server closing before any byte
  of the response is "Server disconnected without sending a response." (as before); 1xx responses
  are skipped; a body framed by the end of the connection ends there; a response to ``HEAD`` has
  no body; trailers are dropped (as httpcore does).
* reuse: a connection goes back to the pool only if the response was read to its end, both sides
  allow keep-alive (HTTP/1.1 without ``Connection: close`` on either side) and nothing followed the
  response.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from types import TracebackType

import httpx

try:
    import httptools

    HTTPTOOLS = True
except ImportError:  # a core install without httptools: lean_client then gives httpx's default client
    HTTPTOOLS = False

Origin = tuple[bytes, str, int]
READ_SIZE = 64 * 1024
MAX_HEAD_BYTES = 100 * 1024  # httpcore's limit for h11's incomplete events (a response head)

_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_VCHAR = rb"[\x21-\x7e\x80-\xff]"
_VALUE = rb"(?:" + _VCHAR + rb"(?:[\t\x20-\x7e\x80-\xff]*" + _VCHAR + rb")?)?"
_HEAD = re.compile(_TOKEN + rb" [\x21-\x7e\x80-\xff]+ HTTP/1\.1\r\n(?:" + _TOKEN + rb": " + _VALUE + rb"\r\n)*\r\n")


class BodyTooLarge(Exception):
    """A response body over the caller's limit (:meth:`Connection.read_body`); the connection is dropped."""


def request_head(request: httpx.Request) -> tuple[bytes, int | None, bool, bool]:
    """The request head as bytes, its ``Content-Length`` (or None), whether the body is chunked and
    whether the request asks to close the connection after the response."""
    parts = [request.method.encode("ascii", "replace"), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    length: int | None = None
    chunked = close = False
    for name, value in request.headers.raw:
        parts += (name, b": ", value, b"\r\n")
        lower = name.lower()
        if lower == b"content-length":
            if not value.isdigit() or (length is not None and int(value) != length):
                raise httpx.LocalProtocolError(f"invalid Content-Length {value!r}", request=request)
            length = int(value)
        elif lower == b"transfer-encoding":
            if value.lower() != b"chunked":
                raise httpx.LocalProtocolError("only Transfer-Encoding: chunked is supported", request=request)
            chunked = True
        elif lower == b"connection":
            close = close or b"close" in value.lower()
    parts.append(b"\r\n")
    head = b"".join(parts)
    if _HEAD.fullmatch(head) is None:
        raise httpx.LocalProtocolError("illegal request line or header name/value", request=request)
    return head, (None if chunked else length), chunked, close


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection, and its asyncio protocol: bytes go from the socket straight into the
    response parser (httptools; a new parser per response, its callbacks are this object's ``on_*``
    methods), and a reader waits on one future for what the parser has produced.

    The pool learns through ``on_close`` when the peer closes the connection or sends anything to it
    while it is idle (so it drops it at once, not when it is next taken)."""

    on_close: Callable[[], None] | None = None

    def __init__(self, origin: Origin, loop: asyncio.AbstractEventLoop) -> None:
        self.origin, self._loop = origin, loop
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = loop.create_future()  # set when the socket is gone
        self.idle = False  # in the pool: any byte now is out of step (a HEAD body, a 408 before closing)
        self.stray = False  # ... and some came: do not reuse
        self.idle_since = 0.0
        self._lost = False  # the peer closed, or the socket failed
        self._waiter: asyncio.Future[None] | None = None  # the reader, waiting for the parser
        self._drain: asyncio.Future[None] | None = None  # a writer, waiting for the socket's buffer
        self._write_paused = self._read_paused = False
        self._start(head_only=False)

    def _start(self, *, head_only: bool) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._head_only, self._close_requested = head_only, False
        self._received = 0  # bytes of the current response so far (bounded until its head is complete)
        self._reason, self._framed = b"", False
        self._headers: list[tuple[bytes, bytes]] = []
        self._status = 0  # set once the final (non-1xx) head is complete
        self._chunks: list[bytes] = []
        self._buffered = 0  # bytes in _chunks (reading pauses above READ_SIZE * 4)
        self._length = self._size = 0  # the declared Content-Length (0: none) and the body's bytes so far
        self._error: BaseException | None = None  # what the reader raises next (a malformed response, EOF)
        self.done = self.reusable = False

    def usable(self, now: float, expiry: float) -> bool:
        """Still worth reusing: not closed by the peer, nothing came while idle, not expired."""
        transport = self.transport
        return not (
            self.stray or self._lost or transport is None or transport.is_closing() or now - self.idle_since > expiry
        )

    def abort(self) -> None:
        if self.transport is not None:
            with contextlib.suppress(Exception):  # a transport of a closed loop may refuse; it is gone either way
                self.transport.abort()

    # -- the protocol (called by the event loop) ----------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.idle:
            self.stray = True
            if self.on_close is not None:
                self.on_close()
            return
        if self.done:  # bytes after the end of the response: this connection is out of step
            self.reusable = False
            return
        self._received += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if not self.done:
                self._fail(exc)
            self.reusable = False  # garbage after a complete response: the response stands, the connection goes
        if not self._status and self._received > MAX_HEAD_BYTES:
            self._fail(httpx.RemoteProtocolError(f"response head over {MAX_HEAD_BYTES} bytes"))
        if self._buffered > 4 * READ_SIZE and not self._read_paused and self.transport is not None:
            self._read_paused = True  # the reader is behind (a slow stream consumer): let TCP push back
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._peer_gone(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._peer_gone(exc)
        if not self.closed.done():
            self.closed.set_result(None)
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_exception(ConnectionResetError("Connection lost"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def _peer_gone(self, exc: Exception | None) -> None:
        if not self._lost:
            self._lost = True
            if self._status and not self._framed and not self.done:  # a body that ends with the connection
                self.done, self.reusable = True, False
            elif exc is not None and not self.done:
                self._fail(exc)
            elif not self.done:
                self._fail(self._eof_error())
            self._wake()
        if self.on_close is not None:
            self.on_close()

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the request --------------------------------------------------------------------------

    async def send_request(self, request: httpx.Request, timeout: float | None) -> None:
        head, length, chunked, close = request_head(request)
        self._start(head_only=request.method == "HEAD")
        self._close_requested = close
        if isinstance(request.stream, httpx.ByteStream):  # a body in memory (JSON posts): one write, one system call
            body = request.content
            self._check_length(request, len(body), length, chunked)
            if chunked and body:
                body = b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
            elif chunked:
                body = b"0\r\n\r\n"
            await self.write(head + body, timeout)
            return
        await self.write(head, timeout)
        sent = 0
        async for chunk in request.stream:  # type: ignore[union-attr]
            if chunk:
                sent += len(chunk)
                if length is not None and sent > length:
                    raise httpx.LocalProtocolError("Too much data for declared Content-Length", request=request)
                await self.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk, timeout)
        self._check_length(request, sent, length, chunked)
        if chunked:
            await self.write(b"0\r\n\r\n", timeout)

    @staticmethod
    def _check_length(request: httpx.Request, sent: int, length: int | None, chunked: bool) -> None:
        if not chunked and sent != (length or 0):
            raise httpx.LocalProtocolError(f"a body of {sent} bytes for Content-Length {length}", request=request)

    async def send_bytes(self, data: bytes, close: bool, timeout: float | None) -> None:
        """Send a request already written as bytes (head and body, checked by the caller)."""
        self._start(head_only=False)
        self._close_requested = close
        await self.write(data, timeout)

    async def write(self, data: bytes, timeout: float | None) -> None:
        transport = self.transport
        assert transport is not None
        transport.write(data)
        if transport.get_write_buffer_size():  # what the socket did not take at once
            if self._lost or transport.is_closing():
                raise ConnectionResetError("Connection lost")
            if self._write_paused:
                self._drain = self._loop.create_future()
                await self._until(self._drain, timeout)

    # -- the response -------------------------------------------------------------------------

    async def read_head(self, timeout: float | None) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """Status, reason and raw headers of the final response (1xx responses skipped)."""
        while not self._status:
            await self._more(timeout)
        return self._status, self._reason, self._headers

    async def body(self, timeout: float | None) -> AsyncIterator[bytes]:
        """The response body as it arrives."""
        while True:
            if self._chunks:
                chunks = self._take()
                yield chunks[0] if len(chunks) == 1 else b"".join(chunks)
                continue  # more may have come (and the end) while the consumer had it
            if self.done:
                return
            await self._more(timeout)

    async def read_body(self, timeout: float | None, limit: int) -> bytes:
        """The whole response body, refused (:class:`BodyTooLarge`) once it is, or says it is, over ``limit`` bytes."""
        parts: list[bytes] = []
        while True:
            if self._size > limit or self._length > limit:
                raise BodyTooLarge(f"over {limit} bytes")
            if self._chunks:
                parts += self._take()
            if self.done:
                return parts[0] if len(parts) == 1 else b"".join(parts)
            await self._more(timeout)

    def _take(self) -> list[bytes]:
        chunks, self._chunks, self._buffered = self._chunks, [], 0
        if self._read_paused and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()
        return chunks

    async def _more(self, timeout: float | None) -> None:
        """Wait until the parser has produced more of the response (or raise what went wrong)."""
        if self._error is None and self._lost and not self.done:  # gone before this response began
            self._fail(self._eof_error())
        if self._error is None:
            self._waiter = self._loop.create_future()
            try:
                await self._until(self._waiter, timeout)
            finally:
                self._waiter = None
        if self._error is not None:
            raise self._error

    async def _until(self, future: asyncio.Future[None], timeout: float | None) -> None:
        """Await ``future``; ``TimeoutError`` after ``timeout`` seconds (one timer, no task cancellation)."""
        timer = None if timeout is None else self._loop.call_later(timeout, _expire, future)
        try:
            await future
        finally:
            if timer is not None:
                timer.cancel()

    def _eof_error(self) -> httpx.RemoteProtocolError:
        if not self._received:
            return httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return httpx.RemoteProtocolError("peer closed connection without sending complete message body")

    # httptools callbacks (called from feed_data)
    def on_status(self, reason: bytes) -> None:
        if not self.done:
            self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._status:  # trailers: dropped, as httpcore drops them
            return
        self._headers.append((name, value.rstrip(b" \t")))  # h11 drops trailing whitespace; llhttp keeps it
        lower = name.lower()
        if lower == b"content-length":
            self._framed = True
            self._length = int(value) if value.strip().isdigit() else 0  # llhttp refuses a malformed one itself
        elif lower == b"transfer-encoding":
            self._framed = True

    def on_headers_complete(self) -> None:
        if self.done:  # another response after the end of this one: out of step
            self.reusable = False
            return
        code = self._parser.get_status_code()
        if code < 200:  # informational (100 Continue...): skipped, the final response follows
            self._reason, self._headers, self._framed, self._length = b"", [], False, 0
            return
        self._status = code
        if self._head_only:
            self._finish()

    def on_body(self, body: bytes) -> None:
        if self.done:  # a body after a HEAD response's head, or data after the end: do not reuse
            self.reusable = False
            return
        self._size += len(body)
        self._buffered += len(body)
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        if self._status and not self.done:
            self._finish()

    def _finish(self) -> None:
        self.done = True
        self.reusable = self._parser.should_keep_alive() and not self._close_requested


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class mapped:  # used as a function: ``with mapped(request, phase):``
    """asyncio/httptools errors as the httpx exceptions httpcore raises in the same situation.

    A class rather than a ``contextmanager`` generator: three of these wrap every upstream request."""

    __slots__ = ("phase", "request")

    def __init__(self, request: httpx.Request | None, phase: str) -> None:
        self.request, self.phase = request, phase

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is None:
            return
        request, phase = self.request, self.phase
        if isinstance(exc, TimeoutError):
            timeout: type[httpx.TimeoutException] = httpx.WriteTimeout if phase == "write" else httpx.ReadTimeout
            raise timeout(f"{phase} timed out", request=request) from None
        if isinstance(exc, httpx.HTTPError):
            if getattr(exc, "_request", None) is None and request is not None:
                exc.request = request
            return
        if isinstance(exc, httptools.HttpParserError):  # malformed, or an upgrade nobody asked for
            raise httpx.RemoteProtocolError(str(exc) or "malformed response", request=request) from None
        if isinstance(exc, OSError):
            error: type[httpx.NetworkError] = httpx.WriteError if phase == "write" else httpx.ReadError
            raise error(str(exc) or type(exc).__name__, request=request) from None

"""How ``podium serve`` runs uvicorn: bounded request heads and a deadline on receiving them.

uvicorn's defaults leave two holes: with ``httptools`` a request head may be any size (one 64 MB
header costs the server 115 MB), and no parser closes a connection whose head arrives slowly (a
byte now and then cancels the keep-alive timer, so a few hundred such "slowloris" connections hold
the server's sockets for good). So both protocols podium runs close them:

* :class:`GuardedHttpToolsProtocol` (the default): uvicorn's ``httptools`` protocol, which costs
  about a third of the CPU of h11 per request. It counts the bytes of a request head as they arrive
  and refuses one over :data:`MAX_HEAD_BYTES` (400, connection closed) before httptools buffers more
  than one read of it.
* :class:`GuardedH11Protocol` (``PODIUM_HTTP_PARSER=h11``): uvicorn's pure-Python ``h11`` protocol
  with h11's own head limit.

Both close a connection (408) whose request head is not complete :data:`HEAD_TIMEOUT_S` seconds after
it opened or after its previous response ended. The httptools protocol also joins a response's head
and body into one send (:class:`JoinedWrites`).
"""

from __future__ import annotations

import os
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024  # request line plus headers
HEAD_TIMEOUT_S = 10.0  # to receive a whole request head
KEEP_ALIVE_S = 5  # idle time between requests on one connection
PARSER_ENV = "PODIUM_HTTP_PARSER"  # httptools (default) or h11
TIMEOUT_408 = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\ncontent-length: 22\r\nconnection: close\r\n\r\nrequest head too slow\n"


class _HeadDeadline:
    """The deadline for a connection's next request head, shared by both protocols (module doc).

    One timer per connection, moved lazily: arming only records when the head is due, and a timer
    that fires before that time is set again for it (a head that completed in time needs no
    cancelling: the protocol's check finds no head pending). Cancelling and making a timer on every
    request cost more than the rest of this class; the timer now fires at most once per
    ``head_timeout_s`` on a busy connection."""

    head_timeout_s = HEAD_TIMEOUT_S
    loop: Any
    _head_deadline: Any = None  # the timer, while one is set
    _head_due = 0.0  # loop time by which the pending head must be complete

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)  # type: ignore[misc]  # the protocol's own, next in the MRO

    def _arm_head_deadline(self) -> None:
        self._head_due = self.loop.time() + self.head_timeout_s
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_at(self._head_due, self._head_timer)

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timer(self) -> None:
        self._head_deadline = None
        if self.loop.time() < self._head_due - 0.005:  # armed again since (a later head): wait for that one
            self._head_deadline = self.loop.call_at(self._head_due, self._head_timer)
            return
        self._head_deadline_passed()

    def _head_deadline_passed(self) -> None:
        raise NotImplementedError


class GuardedH11Protocol(_HeadDeadline, H11Protocol):
    """uvicorn's h11 protocol, plus a deadline for each request head (see the module doc)."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_deadline()  # the next request on this connection gets its own deadline

    def _head_deadline_passed(self) -> None:
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return  # the head arrived (the request is being read or answered)
        if self.conn.our_state is h11.IDLE:
            self.transport.write(TIMEOUT_408)
        self.transport.close()


class _HeadTooLarge(Exception):
    """Raised from a parser callback: the complete head is over the limit."""


class JoinedWrites:
    """A connection's transport whose writes within one pass of the event loop go out as one send.

    uvicorn writes a response's head and its body separately, so every answer cost two system calls
    and two TCP segments (each woke the client). The first write of a pass is held, later ones join
    it, and the whole is written when the loop runs the flush scheduled with it (still in this pass),
    or at once by :meth:`close`. Everything else is the transport's own."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: Any, loop: Any) -> None:
        self._transport, self._loop = transport, loop
        self._held: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._held is None:
            self._held = [data]
            self._loop.call_soon(self.flush)
        else:
            self._held.append(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held and not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedHttpToolsProtocol(_HeadDeadline, HttpToolsProtocol):
    """uvicorn's httptools protocol with a bounded request head and a deadline for it (module doc).

    ``_in_head``: from the end of the previous request (or the connection's start) to the end of
    the next head; the bytes received meanwhile are counted after each read. A head that completes
    within one read is measured by the parser's callbacks instead."""

    max_head_bytes = MAX_HEAD_BYTES

    def connection_made(self, transport: Any) -> None:
        super().connection_made(JoinedWrites(transport, self.loop))  # type: ignore[arg-type]  # a Transport in all but name
        self._in_head, self._head_bytes, self._head_size = True, 0, 0
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        try:
            if self._in_head and self._head_bytes + len(data) > self.max_head_bytes:
                head = self._head_bytes
                super().data_received(data)  # the head may end early in this read
                if self._in_head and head + len(data) > self.max_head_bytes:
                    raise _HeadTooLarge
            else:
                super().data_received(data)
            if self._in_head:
                self._head_bytes += len(data)
        except _HeadTooLarge:
            self._refuse_head()

    def _refuse_head(self) -> None:
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            self.send_400_response("Request head too large.")
        self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._head_size += len(url) + 16  # the method, the version and the line's spaces and CRLF

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self.max_head_bytes:
            raise _HeadTooLarge  # httptools re-raises it from feed_data

    def on_headers_complete(self) -> None:
        self._in_head = False  # the deadline's timer finds no head pending (see _HeadDeadline)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes = True, 0  # what follows is the next request's head

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._in_head:
            self._arm_head_deadline()  # the next request on this connection gets its own deadline

    def _head_deadline_passed(self) -> None:
        if self.transport.is_closing() or not self._in_head:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a response is on its way; the deadline is armed again when it ends
        self.transport.write(TIMEOUT_408)
        self.transport.close()


def uvicorn_options(log_level: str, head_timeout_s: float = HEAD_TIMEOUT_S) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config``: the limits above, on the parser
    ``PODIUM_HTTP_PARSER`` names (``httptools``, the default, or ``h11``)."""
    parser = os.environ.get(PARSER_ENV, "httptools").strip().lower() or "httptools"
    if parser not in ("httptools", "h11"):
        from ..errors import ConfigError

        raise ConfigError(f"{PARSER_ENV}={parser!r} is not a parser podium runs; use 'httptools' or 'h11'")
    base: type = GuardedHttpToolsProtocol if parser == "httptools" else GuardedH11Protocol
    protocol = type(base.__name__, (base,), {"head_timeout_s": head_timeout_s})
    return {
        "http": protocol,
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
        "timeout_keep_alive": KEEP_ALIVE_S,
        "log_level": log_level,
        "access_log": log_level == "debug",
    }

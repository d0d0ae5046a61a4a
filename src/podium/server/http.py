"""How ``podium serve`` runs uvicorn: bounded request heads and a deadline on receiving them.

uvicorn's defaults leave two holes: with ``httptools`` (picked when installed) a request head may
be any size (one 64 MB header costs the server 115 MB), and no parser closes a connection whose
head arrives slowly (a byte now and then cancels the keep-alive timer, so a few hundred such
"slowloris" connections hold the server's sockets for good). So the server uses uvicorn's ``h11``
parser with a head limit (:data:`MAX_HEAD_BYTES`: a larger head gets 400 and the connection is
closed) and :class:`GuardedH11Protocol`, which closes a connection (408) whose request head is not
complete :data:`HEAD_TIMEOUT_S` seconds after it opened or after its previous response ended.
"""

from __future__ import annotations

from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

MAX_HEAD_BYTES = 64 * 1024  # request line plus headers
HEAD_TIMEOUT_S = 10.0  # to receive a whole request head
KEEP_ALIVE_S = 5  # idle time between requests on one connection
TIMEOUT_408 = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\ncontent-length: 22\r\nconnection: close\r\n\r\nrequest head too slow\n"


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus a deadline for each request head (see the module doc)."""

    head_timeout_s = HEAD_TIMEOUT_S

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._head_deadline: Any = None
        self._arm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_deadline()  # the next request on this connection gets its own deadline

    def connection_lost(self, exc: Exception | None) -> None:
        if getattr(self, "_head_deadline", None) is not None:
            self._head_deadline.cancel()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        self._head_deadline = self.loop.call_later(self.head_timeout_s, self._head_deadline_passed)

    def _head_deadline_passed(self) -> None:
        self._head_deadline = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return  # the head arrived (the request is being read or answered)
        if self.conn.our_state is h11.IDLE:
            self.transport.write(TIMEOUT_408)
        self.transport.close()


def uvicorn_options(log_level: str, head_timeout_s: float = HEAD_TIMEOUT_S) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config``: the limits above."""
    protocol = type("GuardedH11Protocol", (GuardedH11Protocol,), {"head_timeout_s": head_timeout_s})
    return {
        "http": protocol,
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
        "timeout_keep_alive": KEEP_ALIVE_S,
        "log_level": log_level,
        "access_log": log_level == "debug",
    }

"""JoinedWrites: a response's head and body, written separately by uvicorn, leave as one send."""

from __future__ import annotations

import asyncio

from podium.server.http import JoinedWrites


class Transport:
    """The socket side: what was sent, send by send."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.sent.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info {name}"


async def test_writes_of_one_loop_pass_leave_as_one_send() -> None:
    transport = Transport()
    joined = JoinedWrites(transport, asyncio.get_running_loop())
    joined.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    joined.write(b"ok")
    assert transport.sent == []  # held until the loop runs the flush
    await asyncio.sleep(0)
    assert transport.sent == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]
    joined.write(b"next")
    await asyncio.sleep(0)
    assert transport.sent[1:] == [b"next"]
    assert joined.get_extra_info("peername") == "info peername"  # the rest is the transport's


async def test_close_sends_what_is_held_first() -> None:
    transport = Transport()
    joined = JoinedWrites(transport, asyncio.get_running_loop())
    joined.write(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
    joined.close()
    assert transport.sent == [b"HTTP/1.1 408 Request Timeout\r\n\r\n"] and transport.closed
    await asyncio.sleep(0)  # the scheduled flush finds nothing left
    assert len(transport.sent) == 1


async def test_nothing_is_written_to_a_closing_transport() -> None:
    transport = Transport()
    joined = JoinedWrites(transport, asyncio.get_running_loop())
    joined.write(b"late")
    transport.closed = True  # the peer went away in the meantime
    await asyncio.sleep(0)
    assert transport.sent == []

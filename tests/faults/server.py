"""A real, misbehaving OpenAI-compatible HTTP server on 127.0.0.1, for fault-injection tests and benches.

It speaks raw HTTP/1.1 over asyncio streams (so it can reset, truncate and trickle at will), runs
its own event loop in a background thread, and picks a fault *per request* from, in order: the
``fault`` query parameter of the URL, the ``x-fault`` header, else the request's ``model``.

A fault spec is ``NAME[:ARG][*N][/TAG]``: ``*N`` applies the fault to the first N requests with
that exact spec only (later ones are served normally); ``/TAG`` only makes the spec unique.

    ok[:LATENCY]             a normal answer (after LATENCY seconds)
    slow_first_byte:S        nothing for S seconds, then a normal answer
    hang                     read the request, never answer (until the client hangs up)
    drip                     a 200 whose body trickles forever (a byte / an SSE delta every 50 ms)
    http:CODE[:RETRY_AFTER]  an error status, e.g. http:500, http:429:0.2
    reset                    TCP reset instead of an answer
    reset_mid                streams: reset after half of the deltas
    malformed_json           200 application/json that is not JSON
    truncated                Content-Length longer than the body (streams: half the deltas, no end)
    wrong_content_type       200 text/html
    oversized                a 9 MiB chunked JSON body
    no_usage                 a normal answer without a ``usage`` object
    random                   with probability ``random_rate``, one of ``random_faults``; else ok

The answer text is the request's ``reply`` field (set it with a pool model's ``extra_body``),
else ``"The answer is 42."``. A request that ends with [assistant: P, user: ...] where the
answer starts with P gets only the rest (so continuation after a broken stream is exact).
Run ``python tests/faults/server.py [--port P] [--seed S] [--rate R]`` to serve in its own process
(it prints the port; ``GET /v1/_stats`` returns the counts).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import socket
import struct
import threading
from collections import Counter
from urllib.parse import parse_qs, urlsplit

DEFAULT_REPLY = "The answer is 42."
RANDOM_FAULTS = [
    "http:500",
    "http:503",
    "http:429:0.05",
    "reset",
    "malformed_json",
    "truncated",
    "wrong_content_type",
    "slow_first_byte:5",
    "hang",
    "drip",
    "reset_mid",
]
OVERSIZE = 9 * 1024 * 1024


class FaultServer:
    """The server; use as a context manager or call :meth:`start` / :meth:`stop`."""

    def __init__(
        self,
        port: int = 0,
        *,
        seed: int = 0,
        random_rate: float = 0.3,
        random_faults: list[str] | None = None,
        stream_delay_s: float = 0.0,
    ) -> None:
        self.port = port
        self.rng = random.Random(seed)
        self.random_rate = random_rate
        self.random_faults = random_faults or RANDOM_FAULTS
        self.stream_delay_s = stream_delay_s
        self.counts: Counter[str] = Counter()
        self.log: list[tuple[str, str]] = []  # (requested spec, fault applied)
        self.open_connections = 0
        self.accepted = 0  # connections ever accepted (keep-alive reuse keeps this low)
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    @property
    def url(self) -> str:
        """The base URL for a pool's ``base_url``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FaultServer:
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="fault-server")
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._open(), self._loop).result(5)
        return self

    async def _open(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(5)
        self._loop.close()

    async def _close(self) -> None:
        if self._server:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> dict:
        """Requests served, faults injected, and connections open (besides the asking one)."""
        injected = sum(1 for _, fault in self.log if fault != "ok")
        return {
            "requests": len(self.log),
            "injected": injected,
            "open_connections": self.open_connections - 1,
            "accepted": self.accepted,
        }

    def requests_for(self, spec: str) -> int:
        """How many chat requests asked for ``spec``."""
        return self.counts[spec]

    # ---- connection handling -------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)  # type: ignore[arg-type]
        self.open_connections += 1
        self.accepted += 1
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self.open_connections -= 1
            self._tasks.discard(task)  # type: ignore[arg-type]
            writer.close()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the connection is finished."""
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
        url = urlsplit(target)
        if method == "GET" and url.path.rstrip("/").endswith("/_stats"):  # for tests driving a server process
            await _send(writer, 200, "application/json", json.dumps(self.stats()).encode())
            return True
        if method == "GET" and url.path.rstrip("/").endswith("/models"):
            await _send(
                writer, 200, "application/json", json.dumps({"object": "list", "data": [{"id": "ok"}]}).encode()
            )
            return True
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            await _send(writer, 400, "application/json", b'{"error": "bad json"}')
            return True
        spec = (parse_qs(url.query).get("fault") or [headers.get("x-fault") or str(data.get("model", "ok"))])[0]
        return await self._serve(spec, data, reader, writer)

    def _pick(self, spec: str) -> tuple[str, str]:
        self.counts[spec] += 1
        base = spec.split("/", 1)[0]
        name, _, limit = base.partition("*")
        if limit and self.counts[spec] > int(limit):
            name = "ok"
        if name == "random":
            name = self.rng.choice(self.random_faults) if self.rng.random() < self.random_rate else "ok"
        fault, _, arg = name.partition(":")
        self.log.append((spec, name))
        return fault, arg

    async def _serve(self, spec: str, data: dict, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        fault, arg = self._pick(spec)
        stream = bool(data.get("stream"))
        reply = _answer(data)
        if fault == "ok" and arg and not await _pause(reader, float(arg)):
            return False
        if fault == "slow_first_byte" and not await _pause(reader, float(arg or 1)):
            return False
        if fault == "hang":
            while await reader.read(65536):
                pass
            return False
        if fault in ("reset", "reset_mid") and not (fault == "reset_mid" and stream):
            _reset(writer)
            return False
        if fault == "http":
            code, _, after = arg.partition(":")
            extra = {"Retry-After": after} if after else {}
            await _send(
                writer,
                int(code),
                "application/json",
                json.dumps({"error": {"message": f"injected {code}"}}).encode(),
                extra,
            )
            return True
        if stream:
            return await self._stream(fault, data, reply, reader, writer)
        return await self._plain(fault, data, reply, reader, writer)

    async def _plain(
        self, fault: str, data: dict, reply: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        if fault == "malformed_json":
            await _send(writer, 200, "application/json", b'{"choices": [{"message": {"content": "The ans')
        elif fault == "wrong_content_type":
            await _send(writer, 200, "text/html", b"<html><body>502 Bad Gateway</body></html>")
        elif fault == "truncated":
            payload = json.dumps(_completion(data, reply, True)).encode()
            writer.write(_head(200, "application/json", {"Content-Length": str(len(payload) + 100)}) + payload)
            await writer.drain()
            return False
        elif fault == "oversized":
            writer.write(_head(200, "application/json", {"Transfer-Encoding": "chunked"}))
            block = b" " * 65536
            for _ in range(OVERSIZE // len(block) + 1):
                writer.write(_chunk(block))
                await writer.drain()
            writer.write(_chunk(json.dumps(_completion(data, reply, True)).encode()) + b"0\r\n\r\n")
            await writer.drain()
        elif fault == "drip":
            writer.write(_head(200, "application/json", {"Transfer-Encoding": "chunked"}))
            while await _pause(reader, 0.05):
                writer.write(_chunk(b" "))
                await writer.drain()
            return False
        else:
            await _send(
                writer, 200, "application/json", json.dumps(_completion(data, reply, fault != "no_usage")).encode()
            )
        return True

    async def _stream(
        self, fault: str, data: dict, reply: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        if fault in ("malformed_json", "wrong_content_type", "oversized"):
            return await self._plain(fault, data, reply, reader, writer)
        writer.write(_head(200, "text/event-stream", {"Transfer-Encoding": "chunked"}))
        pieces = _pieces(reply)
        half = max(1, len(pieces) // 2)
        if fault == "drip":
            pieces = itertools.chain(pieces[:half], itertools.repeat("."))  # type: ignore[assignment]
        for i, piece in enumerate(pieces):
            if fault in ("truncated", "reset_mid") and i >= half:
                if fault == "reset_mid":
                    _reset(writer)
                return False
            event = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            writer.write(_chunk(f"data: {json.dumps(event)}\n\n".encode()))
            await writer.drain()
            if not await _pause(reader, 0.05 if fault == "drip" else self.stream_delay_s):
                return False
        tail = [{"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
        if (data.get("stream_options") or {}).get("include_usage") and fault != "no_usage":
            tail.append({"choices": [], "usage": _usage(data, reply)})
        text = "".join(f"data: {json.dumps(e)}\n\n" for e in tail) + "data: [DONE]\n\n"
        writer.write(_chunk(text.encode()) + b"0\r\n\r\n")
        await writer.drain()
        return True


async def _pause(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Wait ``seconds``; False as soon as the client hangs up (so no handler outlives its client)."""
    if seconds <= 0:
        return not reader.at_eof()
    try:
        return bool(await asyncio.wait_for(reader.read(1), seconds))
    except TimeoutError:
        return True


def _answer(data: dict) -> str:
    reply = str(data.get("reply") or DEFAULT_REPLY)
    messages = data.get("messages") or []
    if len(messages) >= 2 and messages[-2].get("role") == "assistant":
        prefix = messages[-2].get("content") or ""
        if prefix and reply.startswith(prefix):
            return reply[len(prefix) :]
    return reply


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]


def _usage(data: dict, reply: str) -> dict:
    prompt = sum(len(str(m.get("content", ""))) // 4 + 4 for m in data.get("messages") or [])
    completion = max(1, len(reply) // 4)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _completion(data: dict, reply: str, with_usage: bool) -> dict:
    out = {
        "id": "chatcmpl-fault",
        "object": "chat.completion",
        "model": str(data.get("model")),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
    }
    if with_usage:
        out["usage"] = _usage(data, reply)
    return out


def _head(status: int, ctype: str, extra: dict[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} {'OK' if status < 400 else 'Error'}", f"Content-Type: {ctype}"]
    lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def _send(
    writer: asyncio.StreamWriter, status: int, ctype: str, body: bytes, extra: dict[str, str] | None = None
) -> None:
    writer.write(_head(status, ctype, {"Content-Length": str(len(body)), **(extra or {})}) + body)
    await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0) rather than a clean FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def main() -> None:
    """Serve until interrupted; prints the port first. GET /v1/_stats reports what it served."""
    import argparse

    parser = argparse.ArgumentParser(description="a misbehaving OpenAI-compatible server on 127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.3, help="fault rate of the 'random' fault")
    args = parser.parse_args()
    server = FaultServer(args.port, seed=args.seed, random_rate=args.rate).start()
    print(server.port, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()

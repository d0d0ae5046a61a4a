"""`podium serve` as a real uvicorn process on 127.0.0.1, for the hardening, soak and security tests:
its open file descriptors, its log file, and raw-socket clients that misbehave."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

from conftest import REPO, free_port


class PodiumServer:
    """``podium serve --pool POOL`` with ``PODIUM_HOME=home``; stdout and stderr go to ``home/serve.log``."""

    def __init__(
        self, pool: Path, home: Path, *, env: dict[str, str] | None = None, args: list[str] | None = None
    ) -> None:
        self.home, self.port = home, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = home / "serve.log"
        full_env = {
            **os.environ,
            "PODIUM_HOME": str(home),
            "PODIUM_TRACES": "full",
            "PYTHONPATH": os.environ.get("PYTHONPATH") or str(REPO / "src"),
            **(env or {}),
        }
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "podium",
                "serve",
                "--pool",
                str(pool),
                "--port",
                str(self.port),
                "--log-level",
                "info",
                *(args or []),
            ],
            env=full_env,
            cwd=home,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_healthy()

    def _wait_healthy(self, timeout: float = 60.0) -> None:  # start-up at load 10 on 2 cores took > 30 s
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"podium serve exited early:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("podium serve did not become healthy")

    def fds(self) -> int:
        """Open file descriptors of the server process."""
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def describe_fds(self) -> dict[str, int]:
        """Open descriptors by kind: sockets as 'tcp LOCAL->REMOTE-port STATE', others by target."""
        tcp: dict[str, str] = {}
        for name in ("tcp", "tcp6"):
            for line in Path(f"/proc/{self.proc.pid}/net/{name}").read_text().splitlines()[1:]:
                cols = line.split()
                local, remote = int(cols[1].rsplit(":", 1)[1], 16), int(cols[2].rsplit(":", 1)[1], 16)
                role = "listen" if cols[3] == "0A" else ("downstream" if local == self.port else f"to:{remote}")
                tcp[cols[9]] = f"tcp {role} state={cols[3]}"
        kinds: dict[str, int] = {}
        for fd in os.listdir(f"/proc/{self.proc.pid}/fd"):
            try:
                target = os.readlink(f"/proc/{self.proc.pid}/fd/{fd}")
            except OSError:
                continue
            kind = tcp.get(target[8:-1], "socket") if target.startswith("socket:") else target.split("[")[0]
            kinds[kind] = kinds.get(kind, 0) + 1
        return kinds

    def sockets(self) -> int:
        """Open sockets of the server process (its listening one included)."""
        return sum(n for kind, n in self.describe_fds().items() if kind.startswith(("tcp", "socket")))

    def rss_kib(self) -> int:
        """Resident memory of the server process."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def runs(self) -> list[tuple[str, str]]:
        """(id, status) of every stored run."""
        with sqlite3.connect(self.home / "podium.db") as conn:
            return conn.execute("SELECT id, status FROM runs").fetchall()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()

    def __enter__(self) -> PodiumServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def chat_request(port: int, model: str, *, stream: bool = True, extra_headers: str = "") -> bytes:
    """A raw HTTP/1.1 chat-completions request."""
    body = f'{{"model": "{model}", "stream": {str(stream).lower()}, "messages": [{{"role": "user", "content": "hi"}}]}}'.encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra_headers}\r\n"
    )
    return head.encode() + body


async def abandon_stream(port: int, model: str, wait_s: float = 0.3) -> None:
    """Start a streamed chat, read nothing for ``wait_s`` seconds, then hang up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(chat_request(port, model))
    await writer.drain()
    await asyncio.sleep(wait_s)
    writer.close()
    try:
        await writer.wait_closed()
    except (ConnectionError, OSError):
        pass


async def abandon_streams(port: int, model: str, count: int, concurrency: int = 50, wait_s: float = 0.3) -> None:
    """``count`` abandoned streams, ``concurrency`` at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await abandon_stream(port, model, wait_s)

    await asyncio.gather(*(one() for _ in range(count)))


async def settle(read, target: int, timeout: float = 10.0) -> int:
    """Poll ``read()`` until it is at most ``target`` or ``timeout`` passes; the last value."""
    deadline = time.monotonic() + timeout
    value = read()
    while value > target and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        value = read()
    return value

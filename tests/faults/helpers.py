"""Helpers shared by the fault-injection tests: small fast pools on the fault server, socket counting."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from podium.engine import Engine, Event, TurnDelta
from podium.pool import Pool, parse_pool
from podium.reliability import BreakerRegistry, RetryPolicy
from podium.types import Budget, RunResult

FAST_RETRY = dict(max_retries=1, base_delay_s=0.02, max_delay_s=0.1, retry_after_cap_s=1.0)
MAIN_PRICE = dict(input_usd_per_mtok=2.0, output_usd_per_mtok=8.0)
BACKUP_PRICE = dict(input_usd_per_mtok=1.0, output_usd_per_mtok=4.0)


def model(name: str, url: str, fault: str, **extra: object) -> dict:
    """One pool entry on the fault server with test-sized timeouts."""
    return {
        "name": name,
        "backend": "openai",
        "base_url": url,
        "model": fault,
        "timeout_s": 0.8,
        "first_byte_timeout_s": 0.25,
        "connect_timeout_s": 0.3,
        "max_retries": 1,
        "max_tokens": 64,
        **extra,
    }


def fault_pool(url: str, fault: str, backup: str = "ok", **main: object) -> Pool:
    """``main`` (the fault under test, falling back to ``backup``) and ``backup``."""
    config = {
        "name": "faults",
        "models": [
            model("main", url, fault, fallbacks=["backup"], **MAIN_PRICE, **main),
            model("backup", url, backup, **BACKUP_PRICE),
        ],
        "defaults": {"worker": "main", "thinker": "main", "verifier": "main"},
    }
    return parse_pool(yaml.safe_dump(config), "fault pool")


@dataclass
class Outcome:
    """A finished run plus what the caller saw while it streamed."""

    result: RunResult
    deltas: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def received(self) -> str:
        return "".join(self.deltas)


async def run_pool(
    pool: Pool,
    *,
    stream: bool = False,
    coordinator: str = "fixed",
    budget: Budget | None = None,
    breakers: BreakerRegistry | None = None,
    retry: RetryPolicy | None = None,
) -> Outcome:
    """One run on a fresh engine (closed after), recording streamed deltas."""
    import time

    deltas: list[str] = []

    def on_event(event: Event) -> None:
        if isinstance(event, TurnDelta):
            deltas.append(event.text)

    engine = Engine(pool, coordinator, retry=retry or RetryPolicy(**FAST_RETRY), breakers=breakers or BreakerRegistry())
    started = time.perf_counter()
    try:
        result = await engine.run("What is six times seven?", budget=budget, stream=stream, on_event=on_event)
    finally:
        await engine.aclose()
    return Outcome(result, deltas, time.perf_counter() - started)


def _tcp_table() -> dict[str, tuple[int, int]]:
    """inode -> (local port, remote port) for this process's network namespace."""
    table: dict[str, tuple[int, int]] = {}
    for name in ("tcp", "tcp6"):
        path = Path(f"/proc/self/net/{name}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            cols = line.split()
            local, remote, inode = cols[1], cols[2], cols[9]
            table[inode] = (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16))
    return table


def client_sockets(port: int) -> int:
    """Open sockets of this process connected *to* ``port`` (client side; the server's own are excluded)."""
    table = _tcp_table()
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            ports = table.get(target[8:-1])
            if ports and ports[1] == port:
                count += 1
    return count

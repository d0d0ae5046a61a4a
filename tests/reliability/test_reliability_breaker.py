"""Circuit breakers: the state machine, the engine skipping an open endpoint, the half-open probe,
and breaker state shared through the registry file (what ``podium pool status`` shows)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest
import yaml

from faults.helpers import fault_pool, run_pool
from faults.server import FaultServer
from podium.errors import BackendError, BackendTimeout
from podium.reliability import BreakerRegistry, BreakerState, CircuitBreaker, CircuitOpen, endpoint_key, protected
from podium.types import RunStatus

RETRYABLE = BackendError("HTTP 503", status=503, retryable=True)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_threshold_consecutive_failures_then_probes_once() -> None:
    clock = Clock()
    b = CircuitBreaker("ep", threshold=2, open_s=5, clock=clock)
    b.check()
    b.record(RETRYABLE)
    b.check()
    b.record(None)  # a success resets the count
    b.check()
    b.record(RETRYABLE)
    assert b.state == BreakerState.CLOSED
    b.check()
    b.record(RETRYABLE)
    assert b.state == BreakerState.OPEN
    with pytest.raises(CircuitOpen, match="circuit open for ep"):
        b.check()
    clock.now += 5
    b.check()  # the half-open probe
    assert b.state == BreakerState.HALF_OPEN
    with pytest.raises(CircuitOpen, match="probe is in flight"):
        b.check()
    b.record(RETRYABLE)  # probe failed: open again for another open_s
    assert b.state == BreakerState.OPEN and b.seconds_left() == 5
    clock.now += 5
    b.check()
    b.record(None)
    assert b.state == BreakerState.CLOSED and b.failures == 0


def test_client_errors_do_not_trip_and_zero_threshold_disables() -> None:
    b = CircuitBreaker("ep", threshold=1)
    b.record(BackendError("HTTP 400", status=400, retryable=False))
    assert b.state == BreakerState.CLOSED
    off = CircuitBreaker("ep", threshold=0)
    for _ in range(10):
        off.check()
        off.record(RETRYABLE)
    assert off.state == BreakerState.CLOSED


async def test_cancelled_probe_frees_the_slot_and_timeouts_count() -> None:
    clock = Clock()
    b = CircuitBreaker("ep", threshold=1, open_s=1, clock=clock)
    with pytest.raises(BackendTimeout):
        await protected(b, 0.05, lambda: asyncio.sleep(1))
    assert b.state == BreakerState.OPEN
    clock.now += 1
    task = asyncio.create_task(protected(b, None, lambda: asyncio.sleep(10)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await protected(b, None, lambda: asyncio.sleep(0, "ok")) == "ok"  # slot was released
    assert b.state == BreakerState.CLOSED


async def test_engine_skips_open_endpoint_then_probes_and_recovers(fault_server: FaultServer) -> None:
    spec = "http:500*2/breaker"  # fails twice, then the endpoint is healthy again
    # open for 1.5 s: a loaded machine must not reach half-open before the second run starts
    pool = fault_pool(fault_server.url, spec, breaker_threshold=2, breaker_open_s=1.5)
    breakers = BreakerRegistry()
    first = await run_pool(pool, breakers=breakers)
    assert first.result.turns[0].model == "backup" and fault_server.requests_for(spec) == 2
    assert breakers.get(pool.get("main")).state == BreakerState.OPEN

    skipped = await run_pool(pool, breakers=breakers)
    turn = skipped.result.turns[0]
    assert fault_server.requests_for(spec) == 2  # main was not called at all
    assert turn.model == "backup" and turn.fallback_from == "main" and turn.retries == 0
    # skipping costs no time on main: faster than the run that tried main twice (a peer, not a clock)
    assert "circuit open" in turn.attempts[0] and skipped.elapsed < first.elapsed

    await asyncio.sleep(1.55)
    probed = await run_pool(pool, breakers=breakers)
    assert fault_server.requests_for(spec) == 3  # exactly one probe
    assert probed.result.turns[0].model == "main" and probed.result.turns[0].fallback_from is None
    assert breakers.get(pool.get("main")).state == BreakerState.CLOSED


async def test_failed_probe_reopens_without_retrying(fault_server: FaultServer) -> None:
    spec = "http:503/reopen"
    pool = fault_pool(fault_server.url, spec, breaker_threshold=1, breaker_open_s=0.2)
    breakers = BreakerRegistry()
    first = await run_pool(pool, breakers=breakers)
    assert fault_server.requests_for(spec) == 1  # opened on the first failure: no retry against an open circuit
    assert first.result.turns[0].retries == 0 and len(first.result.turns[0].attempts) == 1
    await asyncio.sleep(0.25)
    out = await run_pool(pool, breakers=breakers)
    assert fault_server.requests_for(spec) == 2 and out.result.status == RunStatus.ANSWERED
    assert breakers.get(pool.get("main")).state == BreakerState.OPEN


def test_registry_shares_open_breakers_through_its_file(tmp_path, fault_server: FaultServer) -> None:
    pool = fault_pool(fault_server.url, "ok/main")  # main and backup must be distinct endpoints
    path = tmp_path / "breakers.json"
    first = BreakerRegistry(path)
    b = first.get(pool.get("main"))
    for _ in range(b.threshold):
        b.record(RETRYABLE)
    saved = json.loads(path.read_text())[endpoint_key(pool.get("main"))]
    assert saved["state"] == "open" and saved["last_error"] == "HTTP 503"
    other = BreakerRegistry(path).get(pool.get("main"))  # as another process would see it
    assert other.state == BreakerState.OPEN and 29 < other.seconds_left() <= 30
    assert BreakerRegistry(path).get(pool.get("backup")).state == BreakerState.CLOSED


def test_pool_status_cli_shows_breaker_state(tmp_path, fault_server: FaultServer) -> None:
    pool = fault_pool(fault_server.url, "ok/main")  # main and backup must be distinct endpoints
    pool_file = tmp_path / "pool.yaml"
    pool_file.write_text(yaml.safe_dump(pool.config.model_dump(exclude_none=True)))
    state = tmp_path / "breakers.json"
    b = BreakerRegistry(state).get(pool.get("main"))
    for _ in range(b.threshold):
        b.record(RETRYABLE)
    env = {**os.environ, "PODIUM_BREAKER_FILE": str(state)}
    cmd = [sys.executable, "-m", "podium", "pool", "status", "--pool", str(pool_file)]
    out = subprocess.run([*cmd, "--json", "--probe"], capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    rows = {r["model"]: r for r in json.loads(out.stdout)["endpoints"]}
    assert rows["main"]["state"] == "open" and rows["main"]["seconds_left"] > 0 and rows["main"]["threshold"] == 5
    assert rows["main"]["last_error"] == "HTTP 503" and rows["main"]["probe"] == "ok"
    assert rows["backup"]["state"] == "closed"
    table = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=30)
    assert table.returncode == 0 and "open" in table.stdout and str(state) in table.stdout
    reset = subprocess.run([*cmd, "--reset", "--json"], capture_output=True, text=True, env=env, timeout=30)
    assert {r["state"] for r in json.loads(reset.stdout)["endpoints"]} == {"closed"}

"""A finished request's objects are freed by reference counting, not left in reference cycles for the
garbage collector. Under load each collection walks every object still waiting for it, which was
about 15% of the server's CPU per pass-through request (docs/performance.md, session 7): the
pass-through's runner held its own run, so every request's run, result, turns, request models and
plan stayed in a cycle until a collection found them."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import yaml

pytest.importorskip("fastapi", reason="fastapi is in the 'server' extra")

from faults.helpers import model
from faults.server import FaultServer
from podium.pool import parse_pool
from podium.server.app import create_app
from podium.server.traces import Traces

SERVER_POOL = str(Path(__file__).parents[1] / "pools" / "server.yaml")
ASK = [{"role": "user", "content": "What is 17 * 23?"}]


async def podium_garbage(requests: Callable[[], Awaitable[None]]) -> Counter[str]:
    """podium's objects that only the garbage collector would have freed, after ``requests`` ran."""
    await requests()  # warm: caches and connections made once are not per-request garbage
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        await requests()
        gc.collect()
        found = list(gc.garbage)
    finally:
        gc.garbage.clear()
        gc.set_debug(0)
        gc.enable()
    return Counter(
        f"{type(o).__module__}.{type(o).__qualname__}" for o in found if type(o).__module__.startswith("podium")
    )


def poster(app: object, body: dict, times: int = 5) -> Callable[[], Awaitable[None]]:
    async def requests() -> None:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            for _ in range(times):
                r = await client.post("/v1/chat/completions", json=body)
                assert r.status_code == 200, r.text

    return requests


@pytest.mark.parametrize("stream", [False, True])
async def test_a_pass_through_request_leaves_no_cycles(
    fault_server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    monkeypatch.setenv("PODIUM_TRACES", "full")
    pool = {"name": "one", "models": [model("main", fault_server.url, "ok")], "defaults": {"worker": "main"}}
    traces = Traces(tmp_path / "podium.db")
    app = create_app(parse_pool(yaml.safe_dump(pool), "one-model pool"), traces=traces)
    try:
        garbage = await podium_garbage(poster(app, {"model": "main", "stream": stream, "messages": ASK}))
    finally:
        traces.close()
    assert not garbage, f"left for the garbage collector: {dict(garbage)}"


async def test_a_tier_request_leaves_no_cycles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODIUM_TRACES", "full")
    traces = Traces(tmp_path / "podium.db")
    app = create_app(SERVER_POOL, traces=traces)
    try:
        garbage = await podium_garbage(poster(app, {"model": "podium", "messages": ASK}, times=3))
    finally:
        traces.close()
    assert not garbage, f"left for the garbage collector: {dict(garbage)}"


def test_a_served_app_is_built_out_of_the_collectors_reach(tmp_path: Path) -> None:
    """What a worker built before serving (modules, schemas, pool, app) is frozen: full collections
    no longer walk it (about 90 ms each, every few hundred requests, before). ``podium serve`` with
    one process calls the same function before uvicorn starts."""
    settings = {
        "pool": SERVER_POOL,
        "tiers": None,
        "keys": None,
        "max_body": 1 << 20,
        "host": "127.0.0.1",
        "workers": 2,
    }
    code = (
        "import gc, json, os, sys\n"
        "from podium.cli.serve import WORKER_ENV, worker_app\n"
        "os.environ[WORKER_ENV] = sys.argv[1]\n"
        "before = gc.get_freeze_count()\n"
        "app = worker_app()\n"
        "print(before, gc.get_freeze_count(), gc.get_threshold()[0], gc.get_threshold()[1])\n"
    )
    env = {**os.environ, "PODIUM_HOME": str(tmp_path), "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(settings)], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    before, frozen, young, middle = map(int, out.stdout.split())
    assert before == 0 and frozen > 20_000, out.stdout
    assert young == 7000  # a young collection every 7000 allocations, not 700
    assert middle == 100  # the middle generation: collected every 100 young collections, not 10

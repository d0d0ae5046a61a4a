"""Seed trace stores with real engine runs on the scripted backend (shared by the store/trace tests).

The pool has two workers with known strengths: ``math-eu`` answers ``[math]`` questions right and
``[code]`` questions wrong, ``code-us`` the reverse; ``judge`` ACCEPTs only right answers. So every
stored run has a verifiable outcome, and a replay export of them has a learnable routing signal.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from podium.engine import Engine
from podium.pool import Policy, Pool, parse_pool
from podium.traces.store import Store
from podium.types import Budget, CompletionRequest, RunResult

WORKERS = ("math-eu", "code-us")


def _task(request: CompletionRequest) -> str:
    return request.messages[-1].content


def math_expert(request: CompletionRequest) -> str:
    return "RIGHT: 42" if "[math]" in _task(request) else "WRONG: 41"


def code_expert(request: CompletionRequest) -> str:
    return "RIGHT: def f(): pass" if "[code]" in _task(request) else "WRONG: 7"


def judge(request: CompletionRequest) -> str:
    answer = _task(request).rsplit("Answer to check:", 1)[-1]
    return "ACCEPT: correct" if "RIGHT" in answer else "REVISE: the answer is wrong"


def _slow(fn, seconds: float):
    return lambda request: f"!sleep {seconds}\n{fn(request)}"


slow_math_expert = _slow(math_expert, 0.09)
slow_code_expert = _slow(code_expert, 0.16)
slow_judge = _slow(judge, 0.05)


def pool_yaml(slow: bool = False) -> str:
    """The seed pool; ``slow`` adds sleeps so latency bars differ."""
    prefix = "slow_" if slow else ""
    planner = '"!sleep 0.04\\n1. Read. 2. Answer."' if slow else '"1. Read. 2. Answer."'
    return f"""
name: seedpool
models:
  - name: planner
    backend: scripted
    replies: [{planner}]
    region: eu
    roles: [thinker]
    input_usd_per_mtok: 1.0
    output_usd_per_mtok: 2.0
  - name: math-eu
    backend: scripted
    function: store_seed:{prefix}math_expert
    region: eu
    roles: [worker]
    input_usd_per_mtok: 0.5
    output_usd_per_mtok: 1.5
  - name: code-us
    backend: scripted
    function: store_seed:{prefix}code_expert
    region: us
    roles: [worker]
    input_usd_per_mtok: 3.0
    output_usd_per_mtok: 6.0
  - name: judge
    backend: scripted
    function: store_seed:{prefix}judge
    region: eu
    roles: [verifier]
defaults: {{thinker: planner, worker: math-eu, verifier: judge}}
"""


def seed_pool(slow: bool = False) -> Pool:
    return parse_pool(pool_yaml(slow), "seed pool")


def write_pool(folder: Path, slow: bool = False) -> Path:
    path = folder / "seedpool.yaml"
    path.write_text(pool_yaml(slow))
    return path


def questions(n: int) -> list[str]:
    """``n`` questions, alternating ``[math]`` and ``[code]``."""
    return [f"[{'math' if i % 2 == 0 else 'code'}] question number {i}: what is the result?" for i in range(n)]


async def run_all(
    store: Store, queries: list[str], *, workers=WORKERS, slow: bool = False, max_turns: int = 3
) -> list[RunResult]:
    """Run every query once per worker (the other worker excluded), storing each run."""
    engine = Engine(seed_pool(slow), "rules", on_event=store.handler(source="test"))
    results = []
    try:
        for query in queries:
            for worker in workers:
                others = [w for w in WORKERS if w != worker]
                results.append(
                    await engine.run(query, budget=Budget(max_turns=max_turns), policy=Policy(exclude_models=others))
                )
    finally:
        await engine.aclose()
    return results


def seed(store: Store, queries: list[str], **kwargs) -> list[RunResult]:
    """Synchronous :func:`run_all`."""
    return asyncio.run(run_all(store, queries, **kwargs))


def marker_then_sleep(request: CompletionRequest) -> str:
    """Touch the file named by ``SEED_MARKER`` (so a test knows the run is under way), then hang."""
    import os

    Path(os.environ["SEED_MARKER"]).write_text("started")
    return "!sleep 60\nnever"


@contextmanager
def serving_viewer(store: Store) -> Iterator[str]:
    """The trace viewer on a free 127.0.0.1 port in a thread; yields its base URL, stops it after."""
    from podium.traces.viewer import make_server

    server = make_server(store, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()

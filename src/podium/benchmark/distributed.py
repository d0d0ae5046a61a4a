"""``podium bench run --ray ADDRESS``: the (task, coordinator) pairs fan out to a Ray cluster.

Each pair is one Ray task (one CPU). A Ray worker process builds the same :class:`BenchRunner` the
local run uses (same pool, caps, coordinators, budget; cached per worker process) and runs the pair
with :meth:`BenchRunner.run_one`, storing its trace as ``PODIUM_TRACES``/``PODIUM_TRACES_URL`` say
(every ``PODIUM_*`` variable and ``PYTHONPATH`` travel with the job). Rows come back to the driver,
which appends each to ``results.jsonl`` as it arrives: a stopped run resumes like a local one, and
progress is reported the same way. Results equal the local run's for the same seed (the test
compares them); only timings and run ids differ.

``ADDRESS``: ``local`` starts a private cluster on this machine; ``auto`` finds a running one;
``HOST:PORT`` or ``ray://HOST:PORT`` connects to one.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from ..errors import UsageError, missing_extra
from ..tasks import Task
from .runner import RESULTS, BenchConfig, BenchRunner, Progress, Progressor

_runners: dict[str, BenchRunner] = {}  # per Ray worker process: one runner per (pool, config)


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise missing_extra("ray", "ray") from None
    return ray


def job_env() -> dict[str, str]:
    """What a Ray worker needs of this process's environment: podium's settings and the import path."""
    return {k: v for k, v in os.environ.items() if k.startswith("PODIUM_") or k == "PYTHONPATH"}


def connect(address: str) -> Any:
    """``ray`` connected to ``address`` (see the module docstring); a one-line UsageError if it cannot be."""
    ray = _ray()
    if ray.is_initialized():
        return ray
    _reachable(address)
    kwargs: dict[str, Any] = {"runtime_env": {"env_vars": job_env()}, "log_to_driver": False}
    if address == "local":
        kwargs.update(include_dashboard=False)
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UsageError(f"--ray {address}: cannot connect to a Ray cluster ({str(exc).splitlines()[0]})") from None
    return ray


def _reachable(address: str) -> None:
    """Fail at once on a HOST:PORT nobody listens on (Ray itself would retry for minutes)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # local, auto: Ray's own lookup
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            return
    except OSError as exc:
        raise UsageError(f"--ray {address}: cannot connect to a Ray cluster ({exc})") from None


def _run_pair(pool_spec: dict[str, Any], config: dict[str, Any], task: dict[str, Any], name: str) -> dict[str, Any]:
    """Body of one Ray task: grade ``task`` with coordinator ``name`` (in a Ray worker process)."""
    from ..pool import Policy, Pool, PoolConfig
    from ..traces.store import Store, traces_setting

    key = json.dumps([pool_spec, config], sort_keys=True, default=str)
    runner = _runners.get(key)
    if runner is None:
        pool = Pool(PoolConfig.model_validate(pool_spec["config"]), Policy.model_validate(pool_spec["policy"]))
        store = Store.open() if traces_setting() != "off" else None
        handler = store.handler(source="bench", on_error=lambda exc: None) if store is not None else None
        runner = BenchRunner(pool, BenchConfig.model_validate(config), Path("."), on_event=handler, store=store)
        _runners[key] = runner
    # Ray workers run uvloop, whose child processes the check sandbox cannot start: plain asyncio here
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    return asyncio.run(runner.run_one(Task.model_validate(task), name))


async def run_on_ray(
    runner: BenchRunner, tasks: list[Task], address: str, progress: Progress | None = None
) -> list[dict[str, Any]]:
    """:meth:`BenchRunner.run`, with every pending pair run as a Ray task at ``address``."""
    ray = connect(address)
    runner.out_dir.mkdir(parents=True, exist_ok=True)
    todo = runner.pending(tasks)
    bar = Progressor(len(todo), progress)
    if progress:
        progress(f"[bench] {len(tasks)} tasks x {len(runner.names)} coordinators: {len(todo)} runs to do on Ray")
    remote = ray.remote(num_cpus=1, max_retries=2)(_run_pair)
    pool_spec = {"config": runner.pool.config.model_dump(), "policy": runner.pool.policy.model_dump()}
    config = runner.config.model_dump()
    pending = [remote.remote(pool_spec, config, task.model_dump(), name) for task, name in todo]
    try:
        with open(runner.out_dir / RESULTS, "a", encoding="utf-8") as fh:
            while pending:
                done, pending = await asyncio.to_thread(ray.wait, pending, num_returns=1)
                row = ray.get(done[0])
                await runner.append(fh, row)
                bar.tick(row)
    finally:
        for ref in pending:
            ray.cancel(ref)
        await runner.backends.aclose()
    from .runner import load_results

    ids = {t.id for t in tasks}
    return [r for r in load_results(runner.out_dir) if r["task"] in ids and r["coordinator"] in runner.names]

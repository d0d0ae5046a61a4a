"""``podium train live --ray ADDRESS``: each generation's candidate rollouts run as Ray tasks.

A candidate's score is a whole set of engine runs (every task of the generation's batch, each up to
``max_turns`` model calls and a check), so the population of one generation fans out: one Ray task
per candidate head (and one for the mean head), each in a worker process that rebuilds the trainer
from the pool, tasks and configuration, starts from the driver's response cache and sends back its
reward, the cache entries it added and what it spent. The driver merges them, tells CMA-ES, and
checkpoints as the local loop does, so a stopped run resumes (``--checkpoint ... --resume``). The
rewards are the same as the local run's for a fixed seed: the rollouts do not depend on where they
run, and CMA-ES stays in the driver. Progress (rollouts back per generation) is reported as they
return.

Budgets (``max_calls`` / ``max_usd``) are checked per worker against what was left when the
generation started, and on the merged counts after it: two workers may both pay for a call the
other one also made, so paid calls can exceed the local run's (never the results).
(``podium train replay`` needs no Ray: its population is scored on recorded data in numpy, a few
milliseconds per candidate, less than shipping the candidate to a worker.)
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np

from ..benchmark.distributed import connect
from ..tasks import Task

if TYPE_CHECKING:
    from .live import LiveTrainer, Progress


def _score_job(common: dict[str, Any], theta: list[float], task_ids: list[int]) -> dict[str, Any]:
    """Body of one Ray task (in a worker process): the mean reward of the head ``theta`` on the tasks."""
    from ..pool import Policy, Pool, PoolConfig
    from .live import LiveConfig, LiveTrainer

    pool = Pool(PoolConfig.model_validate(common["pool"]["config"]), Policy.model_validate(common["pool"]["policy"]))
    tasks = [Task.model_validate(t) for t in common["tasks"]]
    trainer = LiveTrainer(pool, tasks, LiveConfig(**common["config"]), cache=common["cache"])
    trainer.mean, trainer.proj, trainer.models = common["mean"], common["proj"], common["models"]
    trainer.backends.max_calls, trainer.backends.max_usd = common["calls_left"], common["usd_left"]
    known = set(common["cache"])
    # Ray workers may run uvloop, whose child processes the check sandbox cannot start: plain asyncio here
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())

    async def run() -> float:
        try:
            return await trainer.score(np.asarray(theta), [tasks[i] for i in task_ids])
        finally:
            await trainer.backends.aclose()

    reward = asyncio.run(run())
    backends = trainer.backends
    return {
        "reward": reward,
        "added": {k: v for k, v in backends.store.items() if k not in known},
        "misses": backends.misses,
        "hits": backends.hits,
        "spent_usd": backends.spent_usd,
    }


class RayScorer:
    """Scores a generation's jobs on the Ray cluster at ``address`` (a :data:`podium.learned.live.Scorer`)."""

    def __init__(self, address: str, progress: Progress | None = None) -> None:
        self.ray = connect(address)
        self.remote = self.ray.remote(num_cpus=1, max_retries=2)(_score_job)
        self.progress = progress

    async def __call__(
        self, trainer: LiveTrainer, jobs: list[tuple[np.ndarray, list[Task]]], generation: int
    ) -> list[float]:
        ray, backends = self.ray, trainer.backends
        index = {id(t): i for i, t in enumerate(trainer.tasks)}
        pool = trainer.pool
        common = ray.put(
            {
                "pool": {"config": pool.config.model_dump(), "policy": pool.policy.model_dump()},
                "config": asdict(trainer.config),
                "tasks": [t.model_dump() for t in trainer.tasks],
                "mean": trainer.mean,
                "proj": trainer.proj,
                "models": trainer.models,
                "cache": dict(backends.store),
                "calls_left": None if backends.max_calls is None else max(0, backends.max_calls - backends.misses),
                "usd_left": None if backends.max_usd is None else max(0.0, backends.max_usd - backends.spent_usd),
            }
        )
        refs = [
            self.remote.remote(common, [float(x) for x in theta], [index[id(t)] for t in tasks])
            for theta, tasks in jobs
        ]
        order = {ref: i for i, ref in enumerate(refs)}
        rewards: list[float] = [0.0] * len(refs)
        pending = list(refs)
        try:
            while pending:
                done, pending = await asyncio.to_thread(ray.wait, pending, num_returns=1)
                out = ray.get(done[0])
                rewards[order[done[0]]] = out["reward"]
                backends.store.update(out["added"])
                backends.misses += out["misses"]
                backends.hits += out["hits"]
                backends.spent_usd += out["spent_usd"]
                if self.progress:
                    self.progress(
                        f"[live] gen {generation}: {len(refs) - len(pending)}/{len(refs)} rollouts back from Ray"
                    )
        finally:
            for ref in pending:
                ray.cancel(ref)
        return rewards

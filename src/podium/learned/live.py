"""``podium train live``: TRINITY's training loop on live rollouts with grounded rewards.

sep-CMA-ES proposes heads (model logits AND the 3 role logits, as linear functions of the
projected query encoding); each candidate drives the real engine as a ``learned`` coordinator on
a sample of tasks, and its fitness is the mean grounded reward::

    reward(run) = check(final answer).score - lam * (model calls in the run)

Every candidate of a generation sees the same tasks (a paired comparison). Responses are cached
by (model, messages, sampling) (:mod:`podium.backends.cached`), so rollouts that repeat a turn
cost nothing; ``max_calls`` / ``max_usd`` cap what the whole training may spend (the loop stops
at the budget and keeps the best head so far). By default runs use the pool's own verifier, as
they will when deployed; ``grounded`` makes the task's check the verifier too.
Ask/tell state (with the random state CMA-ES samples from), the best head so far and the response
cache are checkpointed and resumable. With ``ray`` (``--ray ADDRESS``) each generation's candidate
rollouts run as Ray tasks (:mod:`podium.learned.live_ray`), with the same result for a fixed seed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.cached import CachingBackendSet
from ..checks import run_check
from ..coordinators import get_coordinator
from ..coordinators.base import Coordinator
from ..coordinators.learned import LearnedCoordinator
from ..engine import Engine
from ..errors import UsageError
from ..pool import Pool
from ..tasks import Task
from ..types import Budget
from .encoders import get_encoder
from .head import ROLE_NAMES, Head
from .lazy_cma import load_cma
from .train import fit_projection, load_checkpoint, save_checkpoint

CHECK_MODEL = "check"
Progress = Callable[[str], None]
Scorer = Callable[["LiveTrainer", list[tuple[np.ndarray, list[Task]]], int], Awaitable[list[float]]]


@dataclass(frozen=True)
class LiveConfig:
    """Hyperparameters of live training."""

    generations: int = 15
    popsize: int = 8
    sigma0: float = 1.0
    k: int = 4  # projected encoding size
    lam: float = 0.02  # reward cost per model call
    batch: int | None = None  # tasks per generation; None: all of them
    max_turns: int = 5
    grounded: bool = False  # the check is also the runs' verifier (else the pool's verifier)
    concurrency: int = 8
    seed: int = 0
    max_calls: int | None = None  # paid (uncached) model calls for the whole training
    max_usd: float | None = None
    encoder: dict[str, Any] = field(default_factory=lambda: {"name": "hashed"})

    def __post_init__(self) -> None:
        if self.generations < 0 or self.popsize < 2 or self.k < 1 or self.max_turns < 1:
            raise UsageError("generations >= 0, popsize >= 2, k >= 1 and max_turns >= 1 are required")


@dataclass
class LiveState:
    """Everything needed to resume: optimiser, progress, best head so far, and the response cache."""

    config: LiveConfig
    models: list[str]
    mean: np.ndarray
    proj: np.ndarray
    es: Any  # cma.CMAEvolutionStrategy (cma ships no type information)
    generation: int
    best_theta: np.ndarray
    best_val: float
    history: list[dict[str, Any]] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)
    baselines: dict[str, Any] = field(default_factory=dict)
    rng: Any = None  # numpy's global random state, which CMA-ES samples from (restored on resume)


@dataclass
class Rollouts:
    """Rewards and per-run facts of one coordinator on a list of tasks."""

    rewards: list[float]
    passed: list[bool]
    calls: list[int]
    roles: list[list[str]]

    def summary(self) -> dict[str, float]:
        n = max(len(self.rewards), 1)
        return {
            "reward": sum(self.rewards) / n,
            "accuracy": sum(self.passed) / n,
            "calls_per_item": sum(self.calls) / n,
        }


class LiveTrainer:
    """Scores coordinators by live rollouts on ``tasks`` over ``pool`` with a shared response cache."""

    def __init__(self, pool: Pool, tasks: list[Task], config: LiveConfig, cache: dict[str, Any] | None = None) -> None:
        if not tasks:
            raise UsageError("train live needs at least one task")
        self.pool, self.tasks, self.config = pool, tasks, config
        self.models = list(pool.models)
        self.backends = CachingBackendSet(max_calls=config.max_calls, max_usd=config.max_usd)
        self.backends.store.update(cache or {})
        self.encoder = get_encoder(config.encoder)
        self.scorer: Scorer | None = None  # None: candidates are scored here, one after another

    @property
    def n_params(self) -> int:
        return (int(self.proj.shape[1]) + 1) * (len(self.models) + len(ROLE_NAMES))

    def fit(self) -> None:
        """The projection of query encodings, fitted on the training prompts."""
        emb = self.encoder.encode([t.prompt for t in self.tasks])
        self.mean, self.proj = fit_projection(emb, self.config.k, seed=self.config.seed)

    def head(self, theta: np.ndarray, meta: dict[str, Any] | None = None) -> Head:
        """A head whose ``[z, 1]`` rows are ``theta``; failed-model rows stay 0."""
        n_out, rows = len(self.models) + len(ROLE_NAMES), self.proj.shape[1] + 1
        weights = np.zeros((Head.n_inputs(self.proj.shape[1], len(self.models)), n_out))
        weights[:rows] = np.asarray(theta, dtype=float).reshape(rows, n_out)
        return Head(list(self.models), dict(self.config.encoder), self.mean, self.proj, weights, meta or {})

    async def rollouts(self, coordinator: Coordinator, tasks: list[Task]) -> Rollouts:
        """Run ``coordinator`` on every task; reward = the check's score - lam * model calls."""
        engine = Engine(self.pool, coordinator, backends=self.backends)
        gate = asyncio.Semaphore(self.config.concurrency)
        budget = Budget(max_turns=self.config.max_turns)

        async def one(task: Task) -> tuple[float, bool, int, list[str]]:
            async with gate:
                check = task.check if self.config.grounded else None
                result = await engine.run(task.prompt, budget=budget, check=check)
            grade = await run_check(task.check, result.answer or "")
            calls = sum(t.model != CHECK_MODEL for t in result.turns)
            return (
                grade.score - self.config.lam * calls,
                bool(grade.passed),
                calls,
                [t.role.value for t in result.turns],
            )

        out = await asyncio.gather(*(one(t) for t in tasks))
        return Rollouts(*[list(col) for col in zip(*out)]) if out else Rollouts([], [], [], [])

    async def score(self, theta: np.ndarray, tasks: list[Task]) -> float:
        return (await self.rollouts(LearnedCoordinator(self.head(theta)), tasks)).summary()["reward"]

    async def score_all(self, jobs: list[tuple[np.ndarray, list[Task]]], generation: int) -> list[float]:
        """The mean reward of each (head parameters, tasks) job: here, or by :attr:`scorer` (Ray)."""
        if self.scorer is not None:
            return await self.scorer(self, jobs, generation)
        return [await self.score(theta, tasks) for theta, tasks in jobs]

    def batch(self, generation: int) -> list[Task]:
        size = self.config.batch
        if size is None or size >= len(self.tasks):
            return self.tasks
        rng = np.random.default_rng(self.config.seed * 1000 + generation)
        return [self.tasks[i] for i in sorted(rng.choice(len(self.tasks), size, replace=False))]

    async def new_state(self) -> LiveState:
        cma = load_cma()
        self.fit()
        c = self.config
        x0 = np.zeros(self.n_params)
        es = cma.CMAEvolutionStrategy(
            x0,
            c.sigma0,
            {
                "CMA_diagonal": True,
                "seed": c.seed + 1,
                "verbose": -9,
                "popsize": c.popsize,
                "maxiter": max(c.generations, 1),
            },
        )
        rules = (await self.rollouts(get_coordinator("rules"), self.tasks)).summary()
        start = await self.score(x0, self.tasks)
        return LiveState(
            c,
            self.models,
            self.mean,
            self.proj,
            es,
            0,
            x0,
            start,
            [{"generation": 0, "val": start}],
            baselines={"rules": rules},
        )

    async def step(self, state: LiveState) -> dict[str, Any] | None:
        """One generation (ask, roll out, tell, score the mean on all tasks); None when the budget ran out."""
        tasks = self.batch(state.generation)
        thetas = np.asarray(state.es.ask())
        mean = np.asarray(state.es.mean)
        *fitness, val = await self.score_all(
            [(th, tasks) for th in thetas] + [(mean, self.tasks)], state.generation + 1
        )
        if self.backends.exhausted:
            return None  # rewards past the budget are partial: this generation does not count
        state.es.tell(list(thetas), [-f for f in fitness])
        state.generation += 1
        candidates = [(val, mean)] + ([(f, th) for f, th in zip(fitness, thetas)] if tasks is self.tasks else [])
        best_f, best_th = max(candidates, key=lambda p: p[0])
        if best_f > state.best_val:
            state.best_val, state.best_theta = float(best_f), np.array(best_th, dtype=float)
        record = {
            "generation": state.generation,
            "fit_best": float(max(fitness)),
            "fit_mean": float(np.mean(fitness)),
            "val": float(val),
            "paid_calls": self.backends.misses,
            "cache_hits": self.backends.hits,
        }
        state.history.append(record)
        return record


def load_live_checkpoint(path: Path, config: LiveConfig) -> LiveState:
    """A checkpoint written by :func:`train_live` with the same configuration."""
    state: LiveState = load_checkpoint(path, config, LiveState)
    return state


async def _start(trainer: LiveTrainer, state: LiveState | None, n_tasks: int, progress: Progress | None) -> LiveState:
    """The training state: a new one (baselines measured), or the resumed checkpoint's put back in ``trainer``."""
    if state is None:
        state = await trainer.new_state()
        if progress:
            progress(
                f"[live] {n_tasks} tasks, {len(trainer.models)} models, {trainer.n_params} parameters; "
                f"rules reward {state.baselines['rules']['reward']:.3f}, start {state.best_val:.3f}"
            )
    else:
        trainer.mean, trainer.proj, trainer.models = state.mean, state.proj, state.models
        if state.rng is not None:
            np.random.set_state(state.rng)  # CMA-ES goes on sampling where it stopped
    return state


async def train_live(
    pool: Pool,
    tasks: list[Task],
    config: LiveConfig,
    *,
    checkpoint: Path | None = None,
    resume: bool = False,
    progress: Progress | None = None,
    ray: str | None = None,
) -> tuple[Head, dict[str, Any]]:
    """Train a head by live rollouts; returns it with a report (baselines, best reward, spend).
    ``ray``: a Ray address (see :mod:`podium.benchmark.distributed`) to score candidates on."""
    started = time.perf_counter()
    state = load_live_checkpoint(checkpoint, config) if resume and checkpoint and checkpoint.is_file() else None
    trainer = LiveTrainer(pool, tasks, config, cache=state.cache if state else None)
    if ray is not None:
        from .live_ray import RayScorer

        trainer.scorer = RayScorer(ray, progress)
    state = await _start(trainer, state, len(tasks), progress)
    stopped = None
    while state.generation < config.generations:
        record = await trainer.step(state)
        if record is None:
            stopped = trainer.backends.exhausted
            break
        if progress:
            progress(
                f"[live] gen {record['generation']}/{config.generations}: best {record['fit_best']:.3f}, "
                f"mean head {record['val']:.3f}, paid calls {record['paid_calls']}, cache hits {record['cache_hits']}"
            )
        if checkpoint:
            state.cache, state.rng = trainer.backends.store, np.random.get_state()
            save_checkpoint(state, checkpoint)  # type: ignore[arg-type]  # train.py types it TrainState; it pickles any state
    final = (await trainer.rollouts(LearnedCoordinator(trainer.head(state.best_theta)), tasks)).summary()
    report = {
        "kind": "live",
        "config": asdict(config),
        "tasks": len(tasks),
        "generations": state.generation,
        "baselines": state.baselines,
        "trained": final,
        "best_val": state.best_val,
        "stopped": stopped,
        "paid_calls": trainer.backends.misses,
        "cache_hits": trainer.backends.hits,
        "spent_usd": trainer.backends.spent_usd,
        "seconds": time.perf_counter() - started,
    }
    await trainer.backends.aclose()
    head = trainer.head(state.best_theta, {"training": report})
    return head, report

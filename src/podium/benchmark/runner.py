"""Run every task through every coordinator, grade the final answers, and append results (resumable).

One line per (task, coordinator) goes to ``OUT/results.jsonl`` as soon as it is graded, so a
stopped benchmark continues where it stopped: pairs already in the file are not run again.
The trace of each run goes to the trace store (``PODIUM_TRACES`` applies) with its grade.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..backends import BackendSet
from ..checks import run_check
from ..coordinators import get_coordinator
from ..engine import Engine
from ..errors import UsageError
from ..pool import Pool, PoolConfig
from ..tasks import Task
from ..types import Budget, Role, RunResult

RESULTS = "results.jsonl"
CHECK_MODEL = "check"  # the model name the engine gives verifier turns done by a check
DETAIL_CHARS = 300
ANSWER_CHARS = 2000  # kept in results.jsonl so failures can be read
Progress = Callable[[str], None]


class BenchConfig(BaseModel):
    """What ``podium bench run`` runs; unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid")
    coordinators: list[str] = Field(min_length=1)
    grounded: bool = True  # the task's check is the verifier of the runs
    concurrency: int = Field(default=1, ge=1, le=256)
    budget: Budget = Field(default_factory=Budget)
    call_max_tokens: int | None = Field(default=None, ge=1)  # caps every model's max_tokens per call
    add_baselines: bool = True  # fixed:MODEL for every pool model that may answer


def cap_pool(pool: Pool, max_tokens: int | None) -> Pool:
    """The pool with every model's per-call ``max_tokens`` capped (unchanged when None)."""
    if max_tokens is None:
        return pool
    models = [m.model_copy(update={"max_tokens": min(m.max_tokens, max_tokens)}) for m in pool.config.models]
    config = PoolConfig.model_validate({**pool.config.model_dump(), "models": [m.model_dump() for m in models]})
    return Pool(config, pool.policy, pool.source)


def coordinator_names(requested: list[str], pool: Pool, add_baselines: bool = True) -> list[str]:
    """The requested coordinators (validated by podium's lookup) plus a ``fixed:MODEL`` per worker model."""
    names: list[str] = []
    for name in requested:
        name = name.strip()
        if name and name not in names:
            get_coordinator(name)  # fails now, with the lookup's own message, on an unknown name
            names.append(name)
    if add_baselines:
        names += [f"fixed:{m}" for m in pool.candidates(Role.WORKER) if f"fixed:{m}" not in names]
    if not names:
        raise UsageError("no coordinators to run: pass --coordinators rules,fixed:MODEL,...")
    return names


def load_results(out_dir: Path) -> list[dict[str, Any]]:
    """Rows already in ``OUT/results.jsonl`` (a torn last line from a crash is ignored)."""
    path = out_dir / RESULTS
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def summarize_run(task: Task, coordinator: str, result: RunResult, grade: Any) -> dict[str, Any]:
    """The results.jsonl row of one graded run."""
    model_turns = [t for t in result.turns if t.model != CHECK_MODEL]
    last_worker = next((t for t in reversed(result.turns) if t.role == Role.WORKER and not t.error), None)
    return {
        "task": task.id,
        "family": task.family,
        "coordinator": coordinator,
        "passed": bool(grade.passed),
        "score": float(grade.score),
        "detail": (grade.detail or "")[:DETAIL_CHARS],
        "contained": grade.contained,
        "status": result.status.value,
        "reason": result.reason[:DETAIL_CHARS],
        "run_id": result.run_id,
        "cost_usd": result.cost_usd + result.orchestration_cost_usd,
        "tokens": result.total_tokens + result.orchestration_prompt_tokens + result.orchestration_completion_tokens,
        "latency_s": round(result.latency_s, 4),
        "calls": len(model_turns) + int((result.workflow or {}).get("orchestration_calls", 0)),  # + planning calls
        "turns": len(result.turns),
        "answer_model": last_worker.model if last_worker else None,
        "output_chars": len(result.answer or ""),
        "answer": (result.answer or "")[:ANSWER_CHARS],
        "time": time.time(),
    }


@dataclass
class Progressor:
    """A one-line progress report with ETA, at most every ``every_s`` seconds."""

    total: int
    sink: Progress | None
    every_s: float = 2.0
    done: int = 0
    passed: int = 0
    started: float = field(default_factory=time.perf_counter)
    last: float = 0.0

    def tick(self, row: dict[str, Any]) -> None:
        self.done += 1
        self.passed += row["passed"]
        now = time.perf_counter()
        if self.sink and (now - self.last >= self.every_s or self.done == self.total):
            self.last = now
            rate = (now - self.started) / self.done
            eta = rate * (self.total - self.done)
            self.sink(f"[bench] {self.done}/{self.total} runs, {self.passed} passed, {rate:.2f}s/run, ETA {_hms(eta)}")


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def stderr_progress(message: str) -> None:
    """Progress on stderr: rewritten in place on a terminal, one line each otherwise."""
    end = "\r" if sys.stderr.isatty() else "\n"
    print(message, end=end, file=sys.stderr, flush=True)


class BenchRunner:
    """Runs (task, coordinator) pairs with bounded concurrency and appends graded rows."""

    def __init__(
        self,
        pool: Pool,
        config: BenchConfig,
        out_dir: Path,
        *,
        on_event: Any = None,
        grader: Callable[[Task, RunResult], Any] | None = None,
        store: Any = None,
    ) -> None:
        self.pool = cap_pool(pool, config.call_max_tokens)
        self.config = config
        self.out_dir = out_dir
        self.backends = BackendSet()
        self.names = coordinator_names(config.coordinators, self.pool, config.add_baselines)
        self.engines = {n: Engine(self.pool, n, backends=self.backends) for n in self.names}
        self.on_event = on_event
        self.store = store
        self._lock = asyncio.Lock()

    def pending(self, tasks: list[Task]) -> list[tuple[Task, str]]:
        """Pairs not yet graded in ``results.jsonl``, task-major (so partial results stay paired)."""
        done = {(r["task"], r["coordinator"]) for r in load_results(self.out_dir)}
        return [(t, n) for t in tasks for n in self.names if (t.id, n) not in done]

    async def run_one(self, task: Task, name: str) -> dict[str, Any]:
        check = task.check if self.config.grounded else None  # workflows: see podium/workflows/grounded.py
        result = await self.engines[name].run(
            task.prompt, budget=self.config.budget, on_event=self.on_event, check=check
        )
        grade = await run_check(task.check, result.answer or "")
        row = summarize_run(task, name, result, grade)
        if self.store is not None:
            self.store.grade(
                result.run_id,
                score=row["score"],
                source=f"check:{task.check.type}",
                task_id=task.id,
                detail=row["detail"],
            )
        return row

    async def append(self, fh: Any, row: dict[str, Any]) -> None:
        async with self._lock:
            fh.write(json.dumps(row) + "\n")
            fh.flush()  # a stopped benchmark keeps every graded row

    async def run(self, tasks: list[Task], progress: Progress | None = None) -> list[dict[str, Any]]:
        """Run every pending pair; returns all rows of ``results.jsonl`` for ``tasks`` afterwards."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        todo = self.pending(tasks)
        bar = Progressor(len(todo), progress)
        if progress:
            progress(f"[bench] {len(tasks)} tasks x {len(self.names)} coordinators: {len(todo)} runs to do")
        queue: asyncio.Queue[tuple[Task, str]] = asyncio.Queue()
        for pair in todo:
            queue.put_nowait(pair)

        async def worker(fh: Any) -> None:
            while not queue.empty():
                task, name = queue.get_nowait()
                row = await self.run_one(task, name)
                await self.append(fh, row)
                bar.tick(row)

        try:
            with open(self.out_dir / RESULTS, "a", encoding="utf-8") as fh:
                await asyncio.gather(*(worker(fh) for _ in range(min(self.config.concurrency, max(len(todo), 1)))))
        finally:
            await self.backends.aclose()
        ids = {t.id for t in tasks}
        return [r for r in load_results(self.out_dir) if r["task"] in ids and r["coordinator"] in self.names]

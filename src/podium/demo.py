"""``podium demo``: does orchestration beat a single call? Measured on tasks with executable checks.

Each task runs twice on the same pool: once as a **single call** (the ``fixed`` coordinator: one
worker answer), once as the **podium loop** (the ``rules`` coordinator with the task's check as the
verifier: answer, run the tests, feed the failing test back, answer again, up to ``max_turns``).
Both answers are graded by the same check. Numbers are whatever the runs produce.

Local models sample with a fixed seed, so the same prompt gives the same answer: the loop's first
answer *is* the single call's answer, and the difference between the two columns is what the check
and the retries with feedback add, not sampling luck. By default the loop runs without the planner
turn: on the embedded 135M model a plan tends to derail the answer (``--plan`` puts it back).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from .checks import CheckSpec, run_check
from .config import parse_yaml, read_text_file
from .engine import Engine, EventHandler
from .pool import Pool
from .types import Budget, RunResult

DEMO_SEED = 7


class DemoTask(BaseModel):
    """One task: a question and the check that grades any answer to it."""

    model_config = ConfigDict(extra="forbid")
    id: str
    question: str
    check: CheckSpec


class DemoTasks(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tasks: list[DemoTask] = Field(min_length=1)


@dataclass
class Outcome:
    """One run of one task: passed the check, model calls made, seconds, the run's trace id."""

    passed: bool
    calls: int
    seconds: float
    run_id: str
    detail: str


def load_tasks(path: str | Path | None = None) -> list[DemoTask]:
    """The shipped demo tasks, or those of a YAML file in the same format."""
    if path is None:
        text, source = (resources.files("podium") / "data" / "demo_tasks.yaml").read_text(), "shipped demo_tasks.yaml"
    else:
        text, source = read_text_file(Path(path), "demo tasks"), str(path)
    return parse_yaml(text, source, DemoTasks, "demo tasks").tasks


def demo_pool(pool: Pool, *, plan: bool, seed: int | None = DEMO_SEED) -> Pool:
    """The pool as the demo runs it: local models sample with a fixed ``seed`` and evaluate every
    prompt whole (``prompt_cache: false``: a cached prefix can change a greedy choice), so the same
    prompt gives the same answer and the loop's first answer is the single call's answer; without
    ``plan`` no model may take the planner role (the engine then starts with the worker)."""
    config = pool.config.model_copy(deep=True)
    for spec in config.models:
        if seed is not None and spec.backend == "local":
            spec.extra_body = {**spec.extra_body, "seed": seed}
            spec.prompt_cache = False
        if not plan:
            spec.roles = [r for r in spec.roles if r != "thinker"]
    if not plan:
        config.defaults.thinker = None
    return Pool(config, pool.policy, pool.source)


async def graded(task: DemoTask, result: RunResult, started: float) -> Outcome:
    """Grade the run's final answer with the task's check (the same grader for both arms)."""
    verdict = await run_check(task.check, result.answer or "")
    calls = sum(1 for t in result.turns if t.model != "check")
    return Outcome(verdict.passed, calls, time.perf_counter() - started, result.run_id, verdict.detail or "")


async def run_task(
    task: DemoTask, single: Engine, loop: Engine, max_turns: int, on_event: EventHandler | None = None
) -> tuple[Outcome, Outcome]:
    """The task as a single call and as the loop with its check as verifier."""
    started = time.perf_counter()
    one = await single.run(task.question, budget=Budget(max_turns=1), on_event=on_event)
    first = await graded(task, one, started)
    started = time.perf_counter()
    many = await loop.run(task.question, budget=Budget(max_turns=max_turns), check=task.check, on_event=on_event)
    return first, await graded(task, many, started)


def row(task: DemoTask, single: Outcome, loop: Outcome) -> str:
    def cell(o: Outcome) -> str:
        return f"{'PASS' if o.passed else 'fail'}  {o.calls} call{'s' if o.calls != 1 else ' '} {o.seconds:5.1f}s"

    return f"{task.id:<10} {task.question[:44]:<44}  {cell(single):<20}  {cell(loop)}"


def summary(results: list[tuple[DemoTask, Outcome, Outcome]]) -> list[str]:
    n = len(results)
    s_pass, l_pass = sum(s.passed for _, s, _ in results), sum(l.passed for _, _, l in results)
    s_calls, l_calls = sum(s.calls for _, s, _ in results), sum(l.calls for _, _, l in results)
    s_time, l_time = sum(s.seconds for _, s, _ in results), sum(l.seconds for _, _, l in results)
    return [
        f"{'passed':<56}  {f'{s_pass}/{n}':<20}  {l_pass}/{n}",
        f"{'model calls, time':<56}  {f'{s_calls}, {s_time:.0f}s':<20}  {l_calls}, {l_time:.0f}s",
    ]

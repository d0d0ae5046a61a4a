"""Running one workflow as a graph: steps whose inputs are ready run concurrently.

:func:`execute` schedules steps as their dependencies finish (the model calls themselves are
bounded by the run's ``max_parallel`` semaphore, see :mod:`podium.workflows.runner`). A step
sees exactly what its ``access`` names (:func:`step_messages`). A step whose input failed runs
with that output marked unavailable, or is skipped when it has nothing else to go on. When a
budget runs out, no new step starts; the steps already running finish (their worst case was
reserved when they started), and everything finished stays in the trace.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import BudgetExhausted
from ..types import ChatMessage, Turn, Verdict
from .grounded import check_step, grounded_kind, select_step, worker_answers
from .types import QUERY, SELF, Step, Workflow

if TYPE_CHECKING:
    from .runner import WorkflowRun

UNAVAILABLE = "(not available: that step failed)"
VERIFY_SUFFIX = (  # the verdict protocol of the turn loop's verifier (roles.py); calls also ask structured="verdict"
    "Write one sentence saying what is right or wrong in the answer, then a final line that is exactly "
    "VERDICT: ACCEPT if it is correct and complete, or exactly VERDICT: REVISE if anything is wrong or missing."
)


@dataclass
class StepResult:
    """What one step produced (``output`` None: it failed or was skipped)."""

    step: Step
    output: str | None = None
    error: str | None = None
    turn: Turn | None = None

    @property
    def ok(self) -> bool:
        return self.output is not None and self.error is None


@dataclass
class GraphOutcome:
    """The finished (or cut) graph: results by step id, in completion order, and why it stopped early."""

    results: dict[str, StepResult] = field(default_factory=dict)
    stopped: str | None = None
    skipped: list[str] = field(default_factory=list)


def step_messages(step: Step, query: str, outputs: dict[str, str]) -> list[ChatMessage]:
    """The chat a step's model sees: its instruction, the task if it has access, and the outputs it reads."""
    parts = [step.instruction.strip()]
    if QUERY in step.access:
        parts.append(f"Task:\n{query}")
    for dep in step.deps:
        parts.append(f"Output of step {dep}:\n{outputs[dep]}")
    if step.role == "verifier":
        parts.append(VERIFY_SUFFIX)
    return [ChatMessage(role="user", content="\n\n".join(parts))]


def verdict_protocol(step: Step) -> dict[str, str]:
    """Verifier calls ask for the verdict protocol (a grammar where the backend supports one), as in the turn loop."""
    return {"structured": "verdict"} if step.role == "verifier" else {}


def sub_task(step: Step, query: str, outputs: dict[str, str]) -> str:
    """The task a nested conductor (``model: self``) solves: the instruction plus what the step may see."""
    return "\n\n".join(m.content for m in step_messages(step, query, outputs))


async def execute(
    run: WorkflowRun, workflow: Workflow, query: str, depth: int, prefix: str, origin: str
) -> GraphOutcome:
    """Run ``workflow`` to the end (or until a budget stops it); ``prefix`` labels its steps in the trace."""
    out = GraphOutcome()
    pending = list(workflow.steps)
    running: dict[asyncio.Task[StepResult], Step] = {}
    final_id = workflow.final_step.id
    try:
        while True:
            pending = _launch_ready(run, pending, running, out, query, depth, prefix, origin, final_id)
            if not running:
                break
            finished, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                step = running.pop(task)
                try:
                    out.results[step.id] = task.result()
                except BudgetExhausted as exc:
                    run.exhaust(str(exc))
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
    out.stopped = run.exhausted
    out.skipped += [s.id for s in pending]
    return out


def _launch_ready(
    run: WorkflowRun,
    pending: list[Step],
    running: dict[asyncio.Task[StepResult], Step],
    out: GraphOutcome,
    query: str,
    depth: int,
    prefix: str,
    origin: str,
    final_id: str,
) -> list[Step]:
    """Start every pending step whose inputs are done; skip those whose input failed. Returns what still waits."""
    changed = True
    while changed and run.exhausted is None:
        changed = False
        for step in list(pending):
            deps = [out.results.get(d) for d in step.deps]
            if any(r is None for r in deps):
                continue
            pending.remove(step)
            changed = True
            failed = [r.step.id for r in deps if r is not None and not r.ok]
            if failed and len(failed) == len(deps) and QUERY not in step.access:
                out.results[step.id] = StepResult(step, error=f"skipped: every input step {failed} failed")
                out.skipped.append(step.id)
                continue
            outputs = {
                r.step.id: r.output if r.ok and r.output is not None else UNAVAILABLE for r in deps if r is not None
            }
            label = f"{prefix}{step.id}"
            reason = f"{origin}; step {step.id}"
            final = depth == 0 and step.id == final_id and step.role != "verifier"
            answers = worker_answers([r for r in deps if r is not None])
            grounded = grounded_kind(run.check, step, depth, final_id, len(answers))
            if step.model == SELF:
                coro = run.nested_step(step, sub_task(step, query, outputs), depth, label, reason)
            elif grounded == "verify":
                coro = check_step(run, step, answers, depth, label, reason)
            elif grounded == "select":
                messages = step_messages(step, query, outputs)
                coro = select_step(run, step, answers, messages, depth, label, reason, final)
            else:
                coro = run.model_step(step, step_messages(step, query, outputs), depth, label, reason, final)
            running[asyncio.ensure_future(coro)] = step
    return pending


def verdict_of(result: StepResult | None) -> Verdict | None:
    """A verifier step's verdict (None when it did not run)."""
    return result.turn.verdict if result and result.ok and result.turn else None


def best_answer(workflow: Workflow, outcome: GraphOutcome) -> tuple[str | None, str | None]:
    """The answer and the step it came from: the final step's output (for a verifier final, the worker it
    checked), else the latest finished worker output."""
    final = workflow.final_step
    result = outcome.results.get(final.id)
    if final.role != "verifier" and result is not None and result.ok:
        return result.output, final.id
    checked = [d for d in final.deps if (r := outcome.results.get(d)) and r.ok and r.step.role == "worker"]
    if final.role == "verifier" and checked:
        return outcome.results[checked[-1]].output, checked[-1]
    finished = [r for r in outcome.results.values() if r.ok and r.step.role == "worker" and r.turn is not None]
    if not finished:
        return None, None
    latest = max(finished, key=lambda r: (r.turn.ended_at if r.turn else None) or 0.0)
    return latest.output, latest.step.id

"""Grounded workflow steps: with a task's check, the check verifies and selects instead of a model.

When a run has a check (``Engine.run(..., check=...)``, ``podium bench run --grounded``), at the
top level of the workflow (nested conductors solve sub-tasks the check does not describe):

- a **verifier** step runs the check on the answer it reads: ACCEPT when it passes, else REVISE with
  the failing test's output as the diagnosis (a conductor's follow-up round sees it);
- the **final** step, when it reads several worker answers (best-of-n's pick, moa's aggregator,
  debate's judge), takes the first of them that passes the check; when none passes, its model runs
  as usual.

A check step uses one step of the budget, like a check turn in the turn loop, and no model call.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..checks import CheckResult, CheckSpec, run_check
from ..engine import CHECK_MODEL, TurnStarted
from ..types import ChatMessage, Role, Turn, Verdict
from .types import SELF, Step

if TYPE_CHECKING:
    from .executor import StepResult
    from .runner import WorkflowRun


def grounded_kind(check: CheckSpec | None, step: Step, depth: int, final_id: str, candidates: int) -> str | None:
    """``verify`` or ``select`` when the run's check performs this step, else None (a model runs it)."""
    if check is None or depth > 0 or step.model == SELF:
        return None
    if step.role == "verifier":
        return "verify"
    if step.id == final_id and step.role == "worker" and candidates >= 2:
        return "select"
    return None


def worker_answers(deps: list[StepResult]) -> list[StepResult]:
    """The finished answers a step reads, in its access order (worker and nested-conductor steps)."""
    return [r for r in deps if r.ok and r.step.role == "worker"]


async def check_step(
    run: WorkflowRun, step: Step, answers: list[StepResult], depth: int, label: str, reason: str
) -> StepResult:
    """A verifier step done by the check on the latest answer it reads."""
    from .executor import StepResult

    check = run.check
    assert check is not None
    number, started = _begin(run)
    await run.emit(TurnStarted(number, Role.VERIFIER, CHECK_MODEL, reason))
    if not answers:
        turn = _turn(run, number, step, label, depth, reason, started, output="")
        turn.error = "no answer to check: every input step failed"
        await run.record(turn)
        return StepResult(step, error=turn.error, turn=turn)
    result = await run_check(check, answers[-1].output or "")
    summary = f"check {check.type}: {'passed' if result.passed else 'failed'} (score {result.score:.2f})"
    contained = f" [sandbox stopped: {result.contained}]" if result.contained else ""
    output = f"{summary}{contained}" + (f"\n{result.detail}" if result.detail else "")
    turn = _turn(run, number, step, label, depth, reason, started, output=output)
    turn.verdict = Verdict.ACCEPT if result.passed else Verdict.REVISE
    turn.diagnosis = summary if result.passed else (result.detail or summary)
    await run.record(turn)
    return StepResult(step, output=output, turn=turn)


async def select_step(
    run: WorkflowRun,
    step: Step,
    answers: list[StepResult],
    messages: list[ChatMessage],
    depth: int,
    label: str,
    reason: str,
    final: bool,
) -> StepResult:
    """The first answer that passes the check, else the step's model (the judge) as usual."""
    from .executor import StepResult

    check = run.check
    assert check is not None
    run.check_budget()
    tried: list[str] = []
    for answer in answers:
        result: CheckResult = await run_check(check, answer.output or "")
        if result.passed:
            number, started = _begin(run)
            why = f"{reason}; check {check.type} passed the answer of step {answer.step.id}"
            await run.emit(TurnStarted(number, Role.WORKER, CHECK_MODEL, why, final=final))
            turn = _turn(run, number, step, label, depth, why, started, output=answer.output or "")
            await run.record(turn)
            return StepResult(step, output=turn.output, turn=turn)
        tried.append(answer.step.id)
    why = f"{reason}; no answer passed the check ({', '.join(tried)}): the model picks"
    return await run.model_step(step, messages, depth, label, why, final)


def _begin(run: WorkflowRun) -> tuple[int, float]:
    run.check_budget()
    run.steps_started += 1
    return run.next_number(), time.time()


def _turn(
    run: WorkflowRun, number: int, step: Step, label: str, depth: int, reason: str, started: float, output: str
) -> Turn:
    return Turn(
        turn=number,
        role=Role(step.role),
        model=CHECK_MODEL,
        provider="check",
        reason=reason,
        output=output,
        latency_s=time.time() - started,
        step=label,
        inputs=list(step.access),
        depth=depth,
        started_at=started,
        ended_at=time.time(),
    )

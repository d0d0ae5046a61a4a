"""One workflow run: plan (conductor or template), execute the graph, maybe revise, return a RunResult.

:class:`WorkflowRun` is what :meth:`podium.engine.Engine.run` delegates to when its coordinator
plans workflows (``conductor``, ``topology:NAME``, ``workflow:PATH``). It produces the same
:class:`~podium.types.RunResult` and events as the turn loop, so the CLI, the store, the server
and the benchmarks work unchanged; each step is a :class:`~podium.types.Turn` with its step id,
inputs, depth and wall-clock span.

Every step call goes through :class:`podium.reliability.ModelCall` (retries, fallbacks,
circuit breakers), sized to the budget like an engine turn. Budgets are shared by the whole run,
nested conductors included: steps (``max_turns``), tokens and USD (the conductor's own planning
calls count too), and the deadline. Concurrent calls reserve their worst case, so a call that
could overrun the cost or token budget is never made.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import TYPE_CHECKING, Any

from .. import turns
from ..backends.base import estimate_prompt_tokens
from ..checks import CheckSpec
from ..engine import MAX_FALLBACKS, Event, RunFinished, TurnDelta, TurnFinished, TurnStarted
from ..errors import BudgetExhausted
from ..pool import ModelSpec, Pool
from ..reliability import CallContext, ModelCall
from ..types import Budget, ChatMessage, Completion, CompletionRequest, Role, RunResult, RunStatus, Turn, Usage, Verdict
from .executor import GraphOutcome, StepResult, best_answer, execute, verdict_of, verdict_protocol
from .types import Step, Workflow

if TYPE_CHECKING:
    from ..engine import Engine, EventHandler
    from .planners import Planner


class WorkflowRun:
    """The mutable state of one workflow run, shared by every depth of it."""

    def __init__(
        self,
        engine: Engine,
        pool: Pool,
        query: str,
        budget: Budget,
        handlers: list[EventHandler],
        stream: bool,
        check: CheckSpec | None = None,
    ) -> None:
        self.engine = engine
        self.check = check  # grounded: the check verifies and selects at the top level (workflows/grounded.py)
        self.planner: Planner = engine.coordinator  # type: ignore[assignment]
        self.pool = pool
        self.query = query
        self.budget = budget
        self.handlers = handlers
        self.stream = stream
        self.turns: list[Turn] = []
        self.orchestration: list[Completion] = []
        self.plans: list[dict[str, Any]] = []
        self.reserved: dict[object, tuple[int, float]] = {}  # in-flight calls' worst-case tokens and cost
        # in-flight steps: step, messages, depth, label, reason, attempts, start time
        self.in_flight: dict[int, tuple[Step, list[ChatMessage], int, str, str, CallContext, float]] = {}
        self.steps_started = 0
        self.numbers = 0
        self.exhausted: str | None = None
        self.deadline: float | None = None
        self.semaphore = asyncio.Semaphore(max(1, self.planner.max_parallel))
        self.started = time.perf_counter()

    # accounting

    @property
    def used_tokens(self) -> int:
        return sum(t.prompt_tokens + t.completion_tokens for t in self.turns) + sum(
            c.prompt_tokens + c.completion_tokens for c in self.orchestration
        )

    @property
    def spent_usd(self) -> float:
        return sum(t.cost_usd for t in self.turns) + sum(c.cost_usd for c in self.orchestration)

    @property
    def steps_left(self) -> int:
        return self.budget.max_turns - self.steps_started

    def exhaust(self, reason: str) -> None:
        """A budget ran out: no new step starts anywhere in the run."""
        self.exhausted = self.exhausted or reason

    def check_budget(self) -> None:
        """BudgetExhausted when the steps, tokens or cost are used up."""
        b = self.budget
        if self.exhausted:
            raise BudgetExhausted("budget", self.exhausted)
        if self.steps_left <= 0:
            raise BudgetExhausted("max_turns", f"max_turns: all {b.max_turns} steps used")
        if b.max_tokens is not None and self.used_tokens >= b.max_tokens:
            raise BudgetExhausted("max_tokens", f"max_tokens: {self.used_tokens} of {b.max_tokens} tokens used")
        if b.max_cost_usd is not None and self.spent_usd >= b.max_cost_usd:
            raise BudgetExhausted("max_cost_usd", f"max_cost_usd: ${self.spent_usd:.6f} of ${b.max_cost_usd} spent")

    def affordable(
        self, key: object, spec: ModelSpec, messages: list[ChatMessage], **extra: object
    ) -> CompletionRequest:
        """Size a call to what the budget has left after in-flight reservations; reserve its worst case."""
        b = self.budget
        self.reserved.pop(key, None)
        held_tokens = sum(t for t, _ in self.reserved.values())
        held_usd = sum(u for _, u in self.reserved.values())
        prompt = estimate_prompt_tokens(messages)
        max_tokens = spec.max_tokens
        if b.max_tokens is not None:
            left = b.max_tokens - self.used_tokens - held_tokens - prompt
            if left < 1:
                raise BudgetExhausted(
                    "max_tokens",
                    f"max_tokens: a call to {spec.name} ({prompt} prompt tokens) does not fit the {b.max_tokens}-token budget",
                )
            max_tokens = min(max_tokens, left)
        worst = spec.cost(prompt, max_tokens)
        if b.max_cost_usd is not None and worst > b.max_cost_usd - self.spent_usd - held_usd:
            left_usd = max(b.max_cost_usd - self.spent_usd - held_usd, 0)
            raise BudgetExhausted(
                "max_cost_usd", f"max_cost_usd: a call to {spec.name} may cost ${worst:.6f}, only ${left_usd:.6f} left"
            )
        self.reserved[key] = (prompt + max_tokens, worst)
        return CompletionRequest(messages=messages, max_tokens=max_tokens, **extra)  # type: ignore[arg-type]

    # events

    async def emit(self, event: Event) -> None:
        for handler in self.handlers:
            out = handler(event)
            if inspect.isawaitable(out):
                await out

    def next_number(self) -> int:
        self.numbers += 1
        return self.numbers

    # steps

    def chain(self, step: Step) -> list[ModelSpec]:
        """The step's model, then its configured fallbacks, else other allowed models for the role."""
        spec = self.pool.get(step.model)
        allowed = self.pool.candidates(step.role)
        configured = [m for m in spec.fallbacks if m in self.pool.models and m != spec.name]
        others = configured or [m for m in allowed if m != spec.name]
        return [spec, *[self.pool.get(m) for m in others[:MAX_FALLBACKS]]]

    async def model_step(
        self, step: Step, messages: list[ChatMessage], depth: int, label: str, reason: str, final: bool
    ) -> StepResult:
        """One model call for ``step`` through the engine's reliability path; the turn is recorded."""
        async with self.semaphore:
            self.check_budget()
            self.steps_started += 1
            number, role, started = self.next_number(), Role(step.role), time.time()
            attempts = CallContext()
            self.in_flight[number] = (step, messages, depth, label, reason, attempts, started)
            await self.emit(TurnStarted(number, role, step.model, reason, final=final))
            sink = (lambda spec, text: self.emit(TurnDelta(number, role, spec.name, text))) if self.stream else None
            try:
                served = await ModelCall(
                    self.engine.layers,
                    self.chain(step),
                    CompletionRequest(messages=messages),
                    lambda spec, _request: self.affordable(number, spec, messages, **verdict_protocol(step)),
                    deadline=self.deadline,
                    context=attempts,
                ).run(sink)
            except BudgetExhausted as exc:
                if attempts.errors or attempts.splice.charged:  # keep what the broken attempts consumed
                    await self.record(self.failed_turn(number, f"interrupted: {exc}"))
                self.in_flight.pop(number, None)
                raise
            finally:
                self.reserved.pop(number, None)
            if served is None:
                turn = self.failed_turn(number)
                await self.record(turn)
                return StepResult(step, error=turn.error, turn=turn)
            self.in_flight.pop(number, None)
            role = Role(step.role)
            turn = turns.answered_turn(
                number, role, served, attempts, reason=reason, messages=messages, first_choice=step.model
            )
            await self.record(placed(turn, step, label, depth, started))
            return StepResult(step, output=turn.output, turn=turn)

    def failed_turn(self, number: int, note: str | None = None) -> Turn:
        """The trace record of an in-flight step no model completed (or a budget cut)."""
        step, messages, depth, label, reason, attempts, started = self.in_flight.pop(number)
        turn = turns.failed_turn(
            number, Role(step.role), step.model, attempts, reason=reason, messages=messages, note=note
        )
        return placed(turn, step, label, depth, started)

    async def record(self, turn: Turn) -> None:
        self.turns.append(turn)
        await self.emit(TurnFinished(turn))

    async def nested_step(self, step: Step, task: str, depth: int, label: str, reason: str) -> StepResult:
        """A ``self`` step: a nested conductor solves ``task`` at ``depth + 1`` with the run's remaining budget."""
        self.check_budget()
        self.steps_started += 1
        number, role, started = self.next_number(), Role(step.role), time.time()
        await self.emit(TurnStarted(number, role, "self", reason))
        answer, status, why = await self.solve(task, depth + 1, f"{label}/", rounds=1)
        turn = Turn(
            turn=number,
            role=role,
            model="self",
            reason=f"{reason}; nested conductor: {status.value} ({why})",
            messages=[ChatMessage(role="user", content=task)],
            output=answer or "",
            latency_s=time.time() - started,
            error=None if answer is not None else f"nested conductor gave no answer: {why}",
            step=label,
            inputs=list(step.access),
            depth=depth,
            started_at=started,
            ended_at=time.time(),
        )
        await self.record(turn)
        if status == RunStatus.BUDGET_EXHAUSTED:
            self.exhaust(why)
        return StepResult(step, output=answer, error=turn.error, turn=turn)

    # planning and rounds

    async def solve(
        self, task: str, depth: int, prefix: str, rounds: int | None = None
    ) -> tuple[str | None, RunStatus, str]:
        """Plan and run ``task`` at ``depth``; after a final verifier's REVISE, plan a follow-up round."""
        rounds = rounds or self.planner.rounds
        answer: str | None = None
        current = task
        for r in range(1, rounds + 1):
            label = prefix + (f"r{r}." if r > 1 else "")
            try:
                self.check_budget()
                workflow, origin = await self.planner.plan(self, current, depth)
            except BudgetExhausted as exc:
                self.exhaust(str(exc))
                return answer, RunStatus.BUDGET_EXHAUSTED, str(exc)
            self.plans.append(
                {
                    "depth": depth,
                    "step": prefix.rstrip("/") or None,
                    "round": r,
                    "origin": origin,
                    "workflow": workflow.model_dump(),
                }
            )
            outcome = await execute(self, workflow, current, depth, label, origin)
            found, source = best_answer(workflow, outcome)
            answer = found if found is not None else answer
            if outcome.stopped:
                return answer, RunStatus.BUDGET_EXHAUSTED, outcome.stopped
            status, why, feedback = self.judge(workflow, outcome, source, r, rounds)
            if feedback is None:
                return answer, status, why
            current = f"{task}\n\nA previous attempt answered:\n{answer}\n\nA reviewer said: {feedback}\nProduce an improved answer."
        return answer, RunStatus.FAILED, "no round ran"

    @staticmethod
    def judge(
        workflow: Workflow, outcome: GraphOutcome, source: str | None, r: int, rounds: int
    ) -> tuple[RunStatus, str, str | None]:
        """How a round ended, and the reviewer's feedback when another round should run."""
        final = workflow.final_step
        result = outcome.results.get(final.id)
        if source is None:
            return (
                RunStatus.FAILED,
                f"no step produced an answer (final step {final.id}: {result.error if result else 'did not run'})",
                None,
            )
        if result is None or not result.ok:
            why = result.error if result else "did not run"
            return (
                RunStatus.ANSWERED,
                f"final step {final.id} failed ({why}); best available answer from step {source}",
                None,
            )
        if final.role != "verifier":
            return (
                RunStatus.ANSWERED,
                f"workflow finished: final step {final.id} ({result.turn.model if result.turn else final.model})",
                None,
            )
        verdict = verdict_of(result)
        if verdict == Verdict.ACCEPT:
            return (
                RunStatus.ACCEPTED,
                f"verifier {result.turn.model if result.turn else final.model} accepted (step {final.id})",
                None,
            )
        if r < rounds:
            return RunStatus.ANSWERED, "revise", (result.turn.diagnosis if result.turn else None) or "revise"
        return RunStatus.MAX_TURNS, f"verifier asked for a revision after {rounds} round(s); answer unverified", None

    # the run

    async def execute(self) -> RunResult:
        """The whole run; runtime failures and budgets become a status, never an exception."""
        self.planner.precheck(self.pool)  # a given workflow that cannot run is a UsageError, before any call
        result = RunResult(
            query=self.query,
            status=RunStatus.FAILED,
            pool=self.pool.name,
            coordinator=self.planner.name,
            policy=self.pool.policy.describe(),
        )
        if self.budget.deadline_s is not None:
            self.deadline = asyncio.get_running_loop().time() + self.budget.deadline_s
        answer: str | None = None
        try:
            async with asyncio.timeout_at(self.deadline):
                answer, status, reason = await self.solve(self.query, 0, "")
        except TimeoutError:
            status, reason = RunStatus.BUDGET_EXHAUSTED, f"deadline_s: {self.budget.deadline_s}s elapsed"
            answer = self.best_partial()
        except asyncio.CancelledError:
            await self.finish(result, None, RunStatus.FAILED, "interrupted")
            raise
        except Exception as exc:  # a bug or unexpected failure still ends with the trace kept
            status, reason = RunStatus.FAILED, f"{type(exc).__name__}: {exc}"
        return await self.finish(result, answer, status, reason)

    def best_partial(self) -> str | None:
        """After a deadline: the latest finished top-level worker output."""
        done = [t for t in self.turns if t.error is None and t.role == Role.WORKER and t.depth == 0]
        return max(done, key=lambda t: t.ended_at or 0.0).output if done else None

    async def finish(self, result: RunResult, answer: str | None, status: RunStatus, reason: str) -> RunResult:
        for number in list(self.in_flight):  # steps a deadline or cancel cut short
            self.turns.append(self.failed_turn(number, f"interrupted: {reason}"))
        result.turns = sorted(self.turns, key=lambda t: t.turn)
        if answer is None and status in (RunStatus.ANSWERED, RunStatus.MAX_TURNS):
            status = RunStatus.FAILED
        result.answer, result.status, result.reason = answer, status, reason
        result.latency_s = time.perf_counter() - self.started
        result.orchestration_usage = Usage.total(self.orchestration)
        result.workflow = {
            "planner": self.planner.name,
            "max_depth": self.planner.max_depth,
            "max_parallel": self.planner.max_parallel,
            "orchestration_calls": len(self.orchestration),  # the conductor's own (planning) calls
            "plans": self.plans,
        }
        await self.emit(RunFinished(result))
        return result


def placed(turn: Turn, step: Step, label: str, depth: int, started: float) -> Turn:
    """``turn`` with its place in the workflow: the step's label and inputs, its depth, when it ran."""
    turn.step, turn.inputs, turn.depth = label, list(step.access), depth
    turn.started_at, turn.ended_at = started, time.time()
    return turn

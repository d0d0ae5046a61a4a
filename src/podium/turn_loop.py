"""The turn loop of one run (TRINITY): each turn a coordinator picks a role and a model, the model
acts on the transcript, and the run ends at a verifier's ACCEPT or when a budget runs out.

:class:`TurnLoop` is what :meth:`podium.engine.Engine.iter` runs for turn-loop coordinators (workflow
coordinators run :class:`podium.workflows.runner.WorkflowRun`). Every model call goes through the
reliability layers (:class:`podium.reliability.ModelCall`); runtime failures become a status.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .checks import CheckSpec, run_check
from .coordinators.base import RunState
from .errors import BudgetExhausted, UsageError
from .events import Event, EventHandler, RunFinished, TurnDelta, TurnFinished, TurnStarted
from .pool import ModelSpec, Pool
from .reliability import ModelCall
from .roles import build_messages, forbidden_role
from .turns import answered_turn, failed_turn
from .types import Budget, ChatMessage, CompletionRequest, Decision, Role, RunResult, RunStatus, Turn, Usage, Verdict

if TYPE_CHECKING:
    from .engine import Engine

MAX_FALLBACKS = 2
CHECK_MODEL = "check"  # the model name recorded on verifier turns performed by a run's check


@dataclass
class InFlight:
    """The model call of a turn in progress."""

    number: int
    decision: Decision
    messages: list[ChatMessage]
    call: ModelCall


class TurnLoop:
    """One run's mutable state; kept apart from Engine so concurrent runs share nothing mutable."""

    def __init__(
        self,
        engine: Engine,
        pool: Pool,
        query: str,
        budget: Budget,
        handlers: list[EventHandler],
        stream: bool,
        check: CheckSpec | None = None,
        cache: bool | None = None,
        worker_fields: dict[str, Any] | None = None,
    ) -> None:
        self.engine = engine
        self.pool = pool
        self.state = RunState(query=query, pool=pool, budget=budget, backends=engine.backends, layers=engine.layers)
        self.handlers = handlers
        self.stream = stream
        self.started = time.perf_counter()
        self.deadline: float | None = None
        self.current: InFlight | None = None  # the turn in flight (for the trace if the deadline cuts it)
        self.templates: dict[str, str] = {k: v for k, v in pool.config.prompts.items()}
        self.check = check  # grounded verification: verifier turns run this check
        self.cache = cache  # the request's response-cache choice (None: each pool model's)
        self.worker_fields = worker_fields or {}  # OpenAI fields every worker call sends (tools, response_format)
        self.result = RunResult(
            query=query,
            status=RunStatus.FAILED,
            pool=pool.name,
            coordinator=engine.coordinator.name,
            policy=pool.policy.describe(),
        )

    async def emit(self, event: Event) -> None:
        for handler in self.handlers:
            out = handler(event)
            if inspect.isawaitable(out):
                await out

    async def execute(self) -> RunResult:
        budget = self.state.budget
        loop = asyncio.get_running_loop()
        if budget.deadline_s is not None:
            self.deadline = self.state.deadline = loop.time() + budget.deadline_s
        try:
            async with asyncio.timeout_at(self.deadline):
                status, reason = await self.loop()
        except TimeoutError:
            status, reason = RunStatus.BUDGET_EXHAUSTED, f"deadline_s: {budget.deadline_s}s elapsed"
            self.record_interrupted(reason)
        except asyncio.CancelledError:
            await self.finish(RunStatus.FAILED, "interrupted")
            raise
        except UsageError as exc:  # a config problem found mid-run (e.g. a missing GGUF): the caller's to fix
            await self.finish(RunStatus.FAILED, f"config error: {exc}")
            raise
        except Exception as exc:  # a bug or unexpected failure still ends with the trace kept
            status, reason = RunStatus.FAILED, f"{type(exc).__name__}: {exc}"
        return await self.finish(status, reason)

    async def finish(self, status: RunStatus, reason: str) -> RunResult:
        result = self.result
        result.turns = list(self.state.turns)
        result.answer = self.best_answer()
        if result.answer is None and status in (RunStatus.MAX_TURNS, RunStatus.ANSWERED):
            status, reason = RunStatus.FAILED, reason or "no worker produced an answer"
        result.status, result.reason = status, reason
        result.latency_s = time.perf_counter() - self.started
        result.orchestration_usage = Usage.total(self.state.orchestration)
        await self.emit(RunFinished(result))
        return result

    def best_answer(self) -> str | None:
        worker = self.state.last_of(Role.WORKER)
        return worker.output if worker else None

    async def loop(self) -> tuple[RunStatus, str]:
        consecutive_failures = 0
        while True:
            if self.state.turns_left <= 0:
                return RunStatus.MAX_TURNS, f"max_turns: {self.state.budget.max_turns} turns used"
            exhausted = self.state.budget.exhausted(self.state.usage)
            if exhausted:
                return RunStatus.BUDGET_EXHAUSTED, exhausted
            decision = self.sanitize(await self.engine.coordinator.decide(self.state))
            if not self.pool.candidates(decision.role) and not (
                self.check and decision.role == Role.VERIFIER
            ):  # only a verifier can be missing here
                return (
                    RunStatus.ANSWERED,
                    f"no model may take role {decision.role.value} under this policy; answer unverified",
                )
            try:
                turn = await self.execute_turn(decision)
            except BudgetExhausted as exc:
                self.record_interrupted(str(exc), always=False)
                return RunStatus.BUDGET_EXHAUSTED, str(exc)
            self.state.turns.append(turn)
            await self.emit(TurnFinished(turn))
            consecutive_failures = consecutive_failures + 1 if turn.error else 0
            if consecutive_failures >= 3:
                return RunStatus.FAILED, f"3 turns in a row failed; last error: {turn.error}"
            if turn.tool_calls and not turn.error:  # the client runs the tools, then asks again
                return RunStatus.ANSWERED, f"worker {turn.model} called tools"
            if turn.verdict == Verdict.ACCEPT:
                return RunStatus.ACCEPTED, f"verifier {turn.model} accepted"
            if decision.stop_after and not turn.error:
                return RunStatus.ANSWERED, f"coordinator {self.engine.coordinator.name} ended the run"

    def sanitize(self, decision: Decision) -> Decision:
        """Keep a coordinator's decision inside the rules: allowed model, nothing to verify means work."""
        role, model, reason = decision.role, decision.model, decision.reason
        if role == Role.THINKER and not self.pool.candidates(role):
            role, reason = Role.WORKER, f"{reason} [engine: no model may plan under this policy, worker instead]"
        why = forbidden_role(role, self.state.has_answer, self.state.turns_left)
        if why is not None:  # the run's rules hold whoever decides (a plugin coordinator too)
            role, reason = Role.WORKER, f"{reason} [engine: no {role.value} {why}, worker instead]"
        elif (
            role == Role.VERIFIER
            and self.state.turns_left > 1
            and self.already_judged(CHECK_MODEL if self.check else model)
        ):
            # with a turn to spare a new answer is worth more; on the last turn a re-check stands
            role, reason = Role.WORKER, f"{reason} [engine: {model} already judged this answer, worker instead]"
        if model not in self.pool.candidates(role) and self.pool.candidates(role):
            fallback = self.pool.default_for(role)
            reason = f"{reason} [engine: '{model}' may not act as {role.value}; using {fallback}]"
            model = fallback
        return decision.model_copy(update={"role": role, "model": model, "reason": reason})

    def already_judged(self, verifier: str) -> bool:
        """Whether ``verifier`` already gave a verdict on the latest answer (asking again repeats it)."""
        for t in reversed(self.state.turns):
            if t.error is None and t.role == Role.WORKER:
                return False
            if t.error is None and t.role == Role.VERIFIER and t.model == verifier:
                return True
        return False

    def chain(self, decision: Decision) -> list[str]:
        """The chosen model, then its configured fallbacks, else other allowed models for the role."""
        spec = self.pool.get(decision.model)
        allowed = self.pool.candidates(decision.role)
        configured = [m for m in spec.fallbacks if m in self.pool.models and m != spec.name]
        others = configured or [m for m in allowed if m != spec.name]
        return [spec.name, *others[:MAX_FALLBACKS]]

    async def execute_turn(self, decision: Decision) -> Turn:
        number = self.state.next_turn
        check, name = self.check_for(decision)
        if check is not None:
            await self.emit(TurnStarted(number, decision.role, name, decision.reason))
            return await self.check_turn(number, decision, check, name)
        await self.emit(TurnStarted(number, decision.role, decision.model, decision.reason))
        messages = build_messages(
            decision.role, self.state.query, self.state.turns, self.templates, decision.instruction
        )
        call = ModelCall(
            self.engine.layers,
            [self.pool.get(name) for name in self.chain(decision)],
            self.request_for(decision.role, messages),
            self.affordable,
            deadline=self.deadline,
        )
        self.current = InFlight(number, decision, messages, call)
        sink = (
            (lambda spec, text: self.emit(TurnDelta(number, decision.role, spec.name, text))) if self.stream else None
        )
        served = await call.run(sink)
        self.current = None
        if served is None:
            return self.failed_turn(number, decision, messages, call)
        return answered_turn(
            number,
            decision.role,
            served,
            call.context,
            reason=decision.reason,
            messages=messages,
            first_choice=decision.model,
        )

    def request_for(self, role: Role, messages: list[ChatMessage]) -> CompletionRequest:
        """The call a turn makes: verifiers ask for the verdict protocol, workers send ``worker_fields``."""
        request = _structured(CompletionRequest(messages=messages, cache=self.cache), role)
        if role == Role.WORKER and self.worker_fields:
            request.passthrough = dict(self.worker_fields)
        return request

    def check_for(self, decision: Decision) -> tuple[CheckSpec | None, str]:
        """The check that performs this turn, if any: the run's, else a ``backend: check`` verifier's."""
        if decision.role != Role.VERIFIER:
            return None, ""
        if self.check is not None:
            return self.check, CHECK_MODEL
        spec = self.pool.models.get(decision.model)
        return (spec.check, spec.name) if spec is not None and spec.backend == "check" else (None, "")

    async def check_turn(self, number: int, decision: Decision, check: CheckSpec, name: str) -> Turn:
        """A verifier turn performed by a check: no model call, no cost."""
        started = time.perf_counter()
        result = await run_check(check, self.best_answer() or "")
        verdict = Verdict.ACCEPT if result.passed else Verdict.REVISE
        summary = f"check {check.type}: {'passed' if result.passed else 'failed'} (score {result.score:.2f})"
        contained = f" [sandbox stopped: {result.contained}]" if result.contained else ""
        return Turn(
            turn=number,
            role=Role.VERIFIER,
            model=name,
            provider="check",
            reason=decision.reason,
            output=f"{summary}{contained}" + (f"\n{result.detail}" if result.detail else ""),
            verdict=verdict,
            diagnosis=result.detail or summary if not result.passed else summary,
            latency_s=time.perf_counter() - started,
        )

    def failed_turn(
        self, number: int, decision: Decision, messages: list[ChatMessage], call: ModelCall, note: str | None = None
    ) -> Turn:
        """The trace record of a turn no model completed, with the tokens its broken streams consumed."""
        return failed_turn(
            number,
            decision.role,
            decision.model,
            call.context,
            reason=decision.reason,
            messages=messages,
            spec=self.pool.config_model(decision.model),  # its region lets the audit place a failed call
            note=note,
        )

    def record_interrupted(self, reason: str, always: bool = True) -> None:
        """A budget cut a turn short: keep it in the trace (if a call was made), with what it consumed."""
        current, self.current = self.current, None
        if current is not None and (always or current.call.context.consumed):
            note = f"interrupted: {reason}"
            turn = self.failed_turn(current.number, current.decision, current.messages, current.call, note)
            self.state.turns.append(turn)

    def affordable(self, spec: ModelSpec, request: CompletionRequest) -> CompletionRequest:
        """Size the call to the model's context window and the remaining budget (RunState.size_call)."""
        max_tokens = self.state.size_call(spec, request.messages, spec.max_tokens)
        return request.model_copy(update={"max_tokens": max_tokens})


def _structured(request: CompletionRequest, role: Role) -> CompletionRequest:
    """Verifier calls ask for the verdict protocol (a grammar where the backend supports one)."""
    return request.model_copy(update={"structured": "verdict"}) if role == Role.VERIFIER else request

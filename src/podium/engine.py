"""The turn loop (TRINITY): each turn a coordinator picks a role and a model, the model acts on the
transcript, and the run ends at a verifier's ACCEPT or when a budget runs out.

Every run returns a :class:`RunResult`; runtime failures become a status, never an exception.
Events (:class:`TurnStarted`, :class:`TurnDelta`, :class:`TurnFinished`, :class:`RunFinished`)
let a CLI show progress, a server stream tokens, and a store persist the trace.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from .backends import BackendSet
from .checks import CheckSpec, parse_check, run_check
from .coordinators import get_coordinator
from .coordinators.base import Coordinator, RunState
from .errors import BudgetExhausted, UsageError
from .pool import ModelSpec, Policy, Pool, load_pool
from .preflight import check_coordinator
from .reliability import Attempts, BreakerRegistry, RetryPolicy, call_with_fallbacks, default_breakers
from .roles import build_messages, forbidden_role, parse_verdict
from .types import Budget, Completion, CompletionRequest, Decision, Role, RunResult, RunStatus, Turn, Verdict


@dataclass
class TurnStarted:
    turn: int
    role: Role
    model: str
    reason: str
    final: bool = False  # workflow runs: this step's output is the answer (a server may stream it live)


@dataclass
class TurnDelta:
    turn: int
    role: Role
    model: str
    text: str


@dataclass
class TurnFinished:
    turn: Turn


@dataclass
class RunFinished:
    result: RunResult


Event = TurnStarted | TurnDelta | TurnFinished | RunFinished
EventHandler = Callable[[Event], Awaitable[None] | None]
MAX_FALLBACKS = 2
CHECK_MODEL = "check"  # the model name recorded on verifier turns performed by a run's check


class Engine:
    """Runs queries over a pool with a coordinator.

    ``backends`` shares clients and model instances across runs; ``on_event`` receives every
    event of every run (per-run handlers can be passed to :meth:`run` too).
    """

    def __init__(
        self,
        pool: Pool,
        coordinator: Coordinator | str = "rules",
        *,
        backends: BackendSet | None = None,
        retry: RetryPolicy | None = None,
        on_event: EventHandler | None = None,
        breakers: BreakerRegistry | None = None,
    ) -> None:
        self.pool = pool
        self.coordinator = get_coordinator(coordinator) if isinstance(coordinator, str) else coordinator
        self.backends = backends or BackendSet()
        self.retry = retry
        self.breakers = breakers or default_breakers()  # per-endpoint circuit breakers, shared across runs
        self.handlers: list[EventHandler] = [on_event] if on_event else []

    async def run(
        self,
        query: str,
        *,
        budget: Budget | None = None,
        policy: Policy | None = None,
        on_event: EventHandler | None = None,
        stream: bool = False,
        check: CheckSpec | dict | None = None,
        cache: bool | None = None,
    ) -> RunResult:
        """Orchestrate ``query`` to an answer. Raises only UsageError (bad query, impossible policy).

        ``cache`` sets the model calls' response cache (backends/cached.py): True use it, False bypass
        it, None (default) as each pool model says.

        With ``check`` (a :data:`podium.checks.CheckSpec`) every verifier turn runs the check
        instead of a model: ACCEPT when it passes, else REVISE with the failing test as diagnosis.
        """
        if not query or not query.strip():
            raise UsageError("the question is empty; pass a question as an argument or on stdin")
        pool = self.pool.restrict(policy) if policy else self.pool
        pool.default_for(Role.WORKER)  # PolicyError now, before any data leaves
        check_coordinator(pool, self.coordinator)  # ConfigError: fixed:MODEL or a head naming no pool model
        handlers = [*self.handlers, *([on_event] if on_event else [])]
        try:
            parsed = parse_check(check) if check is not None else None
        except ValidationError as exc:
            first = exc.errors()[0]
            raise UsageError(
                f"bad check {check!r}: {'.'.join(map(str, first['loc'][1:])) or 'type'}: {first['msg']} (see docs/checks.md)"
            ) from None
        if getattr(self.coordinator, "plans_workflows", False):  # conductor / topology:NAME / workflow:PATH
            if parsed is not None:
                raise UsageError(
                    f"--check verifies turn-loop coordinators; '{self.coordinator.name}' writes a workflow "
                    "(grade its final answer instead, as `podium bench run` does)"
                )
            from .workflows.runner import WorkflowRun

            return await WorkflowRun(self, pool, query, budget or pool.config.budget, handlers, stream).execute()
        run = _Run(self, pool, query, budget or pool.config.budget, handlers, stream)
        run.check = parsed
        run.cache = cache
        return await run.execute()

    async def aclose(self) -> None:
        """Close the backends (HTTP connections)."""
        await self.backends.aclose()


class _Run:
    """One run's mutable state; kept apart from Engine so concurrent runs share nothing mutable."""

    def __init__(
        self, engine: Engine, pool: Pool, query: str, budget: Budget, handlers: list[EventHandler], stream: bool
    ) -> None:
        self.engine = engine
        self.pool = pool
        self.state = RunState(query=query, pool=pool, budget=budget, backends=engine.backends)
        self.handlers = handlers
        self.stream = stream
        self.started = time.perf_counter()
        self.deadline: float | None = None
        self.current: tuple | None = None  # the turn in flight (for the trace if the deadline cuts it)
        self.templates = {**pool.config.prompts}
        self.check: CheckSpec | None = None  # grounded verification: verifier turns run this check
        self.cache: bool | None = None  # the request's response-cache choice (None: the pool's)
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
            self.deadline = loop.time() + budget.deadline_s
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
        orch = self.state.orchestration
        result.orchestration_prompt_tokens = sum(c.prompt_tokens for c in orch)
        result.orchestration_completion_tokens = sum(c.completion_tokens for c in orch)
        result.orchestration_cost_usd = sum(c.cost_usd for c in orch)
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
            exhausted = self.exhausted_budget()
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
            if turn.verdict == Verdict.ACCEPT:
                return RunStatus.ACCEPTED, f"verifier {turn.model} accepted"
            if decision.stop_after and not turn.error:
                return RunStatus.ANSWERED, f"coordinator {self.engine.coordinator.name} ended the run"

    def exhausted_budget(self) -> str | None:
        b, used_tokens, cost = self.state.budget, self.state.used_tokens, self.state.spent_usd
        if b.max_tokens is not None and used_tokens >= b.max_tokens:
            return f"max_tokens: {used_tokens} of {b.max_tokens} tokens used"
        if b.max_cost_usd is not None and cost >= b.max_cost_usd:
            return f"max_cost_usd: ${cost:.6f} of ${b.max_cost_usd} spent"
        return None

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
        attempts = Attempts()  # failures, retries, and what the caller already received, across models
        self.current = (number, decision, messages, attempts)
        sink = (
            (lambda spec, text: self.emit(TurnDelta(number, decision.role, spec.name, text))) if self.stream else None
        )
        served = await call_with_fallbacks(
            [self.pool.get(name) for name in self.chain(decision)],
            lambda spec: _structured(self.affordable_request(spec, messages), decision.role),
            self.engine.backends,
            self.engine.breakers,
            attempts,
            retry=self.engine.retry,
            deadline=self.deadline,
            sink=sink,
        )
        self.current = None
        if served is None:
            return self.failed_turn(number, decision, messages, attempts)
        turn = self.make_turn(number, decision, served.spec, messages, served.completion)
        turn.retries, turn.attempts = attempts.retries, attempts.errors
        turn.fallback_from = decision.model if served.index > 0 else None
        return turn

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
        self, number: int, decision: Decision, messages: list, attempts: Attempts, note: str | None = None
    ) -> Turn:
        """The trace record of a turn no model completed, with the tokens its broken streams consumed."""
        errors, splice = [*attempts.errors, *([note] if note else [])], attempts.splice
        spec = self.pool.config_model(decision.model)  # its region lets the audit place a failed call
        return Turn(
            turn=number,
            role=decision.role,
            model=decision.model,
            reason=decision.reason,
            messages=messages,
            provider=spec.provider_name if spec else None,
            region=spec.region if spec else None,
            error="; ".join(errors) or "no provider available",
            retries=attempts.retries,
            attempts=errors,
            output=splice.sent,
            prompt_tokens=splice.prompt_tokens,
            completion_tokens=splice.completion_tokens,
            cost_usd=splice.cost_usd,
            usage_estimated=splice.charged,
        )

    def record_interrupted(self, reason: str, always: bool = True) -> None:
        """A budget cut a turn short: keep it in the trace (if a call was made), with what it consumed."""
        current, self.current = self.current, None
        if current is not None and (always or current[3].errors or current[3].splice.charged):
            number, decision, messages, attempts = current
            self.state.turns.append(self.failed_turn(number, decision, messages, attempts, f"interrupted: {reason}"))

    def affordable_request(self, spec: ModelSpec, messages: list) -> CompletionRequest:
        """Size the call to the model's context window and the remaining budget (RunState.size_call)."""
        return CompletionRequest(
            messages=messages, max_tokens=self.state.size_call(spec, messages, spec.max_tokens), cache=self.cache
        )

    def make_turn(
        self, number: int, decision: Decision, spec: ModelSpec, messages: list, completion: Completion
    ) -> Turn:
        turn = Turn(
            turn=number,
            role=decision.role,
            model=spec.name,
            provider=spec.provider_name,
            region=spec.region,
            reason=decision.reason,
            messages=messages,
            output=completion.text,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            cost_usd=completion.cost_usd,
            latency_s=completion.latency_s,
            usage_estimated=completion.usage_estimated,
        )
        if decision.role == Role.VERIFIER:
            turn.verdict, turn.diagnosis = parse_verdict(completion.text)
        return turn


def _structured(request: CompletionRequest, role: Role) -> CompletionRequest:
    """Verifier calls ask for the verdict protocol (a grammar where the backend supports one)."""
    return request.model_copy(update={"structured": "verdict"}) if role == Role.VERIFIER else request


async def aask(
    query: str,
    pool: str | Pool = "embedded",
    coordinator: str | Coordinator = "rules",
    *,
    check: CheckSpec | dict | None = None,
    **budget: Any,
) -> RunResult:
    """Run one query on a pool (a shipped name, a path, or a Pool) and close everything after.
    ``check`` grades the answer instead of a verifier model (see :meth:`Engine.run`)."""
    engine = Engine(load_pool(pool) if isinstance(pool, str) else pool, coordinator)
    try:
        return await engine.run(query, budget=Budget(**budget), check=check)
    finally:
        await engine.aclose()


def ask(
    query: str,
    pool: str | Pool = "embedded",
    coordinator: str | Coordinator = "rules",
    *,
    check: CheckSpec | dict | None = None,
    **budget: Any,
) -> RunResult:
    """Synchronous :func:`aask`."""
    return asyncio.run(aask(query, pool, coordinator, check=check, **budget))

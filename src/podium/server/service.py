"""What the HTTP layer calls: turn a chat request into a plan (target, merged policy, budget), then
run it as a tier (the engine) or as a pass-through to one pool model (with retries and fallbacks).

Policy merge: the key's policy is narrowed by the request's ``podium`` field
(:meth:`podium.pool.Policy.narrow`), so a request can only take models away. Budgets likewise: a
request may ask for fewer turns or a lower cost cap than its tier, never more.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import cast

from ..backends import BackendSet
from ..backends.base import estimate_prompt_tokens
from ..coordinators.base import Coordinator
from ..engine import Engine
from ..errors import ContextOverflow, PolicyError, UsageError
from ..events import Event, Feed, RunFinished, TurnDelta, TurnFinished, TurnStarted
from ..pool import ModelSpec, Policy, Pool
from ..reliability import Layers, ModelCall, default_breakers
from ..turns import answered_turn, failed_turn
from ..types import Budget, CompletionRequest, Role, RunResult, RunStatus, Turn
from .auth import ApiKey
from .compat import upstream_fields, worker_fields
from .errors import ApiError, bad_request
from .plan import Outcome, Plan, PlanRun, Upstream, least, model_not_found, narrow, render_query
from .quotas import check_deployments_free
from .schemas import ChatCompletionRequest, PodiumOptions
from .tiers import Tier, TierSet

TextSink = Callable[[ModelSpec, str], Awaitable[None] | None]


NO_OPTIONS = PodiumOptions()  # a request without a ``podium`` field (read only)
NO_POLICY = Policy()
NO_REQUEST = CompletionRequest(messages=[])  # a pass-through's ModelCall: each model gets its own (read only)


class Service:
    """The server's pool, tiers and engines; shared by every request."""

    def __init__(self, pool: Pool, tiers: TierSet, backends: BackendSet | None = None) -> None:
        self.pool = pool
        self.tiers = tiers.by_name()
        self.backends = backends or BackendSet()
        self.breakers = default_breakers()  # the same per-endpoint breakers the engines use
        self.layers = Layers(self.backends, self.breakers)  # the pass-through's reliable path
        self.views = {name: t.pool_view(pool) for name, t in self.tiers.items()}
        self.engines = {
            name: Engine(self.views[name], t.coordinator_for(), backends=self.backends, breakers=self.breakers)
            for name, t in self.tiers.items()
        }

    async def aclose(self) -> None:
        await self.backends.aclose()

    # planning

    def plan(self, request: ChatCompletionRequest, key: ApiKey) -> Plan:
        """Resolve the model, merge policies and budgets; ApiError (4xx) on anything invalid."""
        options = request.podium or NO_OPTIONS
        policy = key.policy.narrow(NO_POLICY if options is NO_OPTIONS else options.policy())
        plan = Plan(request=request, key=key, policy=policy)
        if request.model in self.tiers:
            plan.cost_weight = options.cost_weight
            return self._plan_tier(plan, self.tiers[request.model], options)
        base, sep, weight = request.model.rpartition("@")
        if sep and base in self.tiers:  # RouteLLM-style: the cost weight in the model name
            try:
                plan.cost_weight = float(weight) if options.cost_weight is None else options.cost_weight
            except ValueError:
                raise bad_request(
                    f"model '{request.model}': the part after @ must be a cost weight in [0, 1]", param="model"
                ) from None
            if not 0 <= plan.cost_weight <= 1:
                raise bad_request(f"model '{request.model}': cost weight must be in [0, 1]", param="model")
            return self._plan_tier(plan, self.tiers[base], options)
        if self.pool.config_model(request.model) is not None:
            return self._plan_model(plan, options)
        raise model_not_found(request.model)

    def _plan_tier(self, plan: Plan, tier: Tier, options: PodiumOptions) -> Plan:
        self.check_roles(tier, plan.key.policy, status=403, who=f"API key '{plan.key.name}'")
        self.check_roles(tier, plan.policy, status=400, who="the request's podium policy")
        if plan.request.tools and getattr(self.engines[tier.name].coordinator, "plans_workflows", False):
            raise ApiError(
                400,
                f"tools are supported on turn-loop tiers and pool models, not on workflow tier '{tier.name}' "
                f"(coordinator {tier.coordinator})",
                param="tools",
                code="unsupported_on_tier",
            )
        plan.tier = tier
        pool_budget = self.pool.config.budget  # the pool file's limits hold for every tier
        plan.budget = Budget(
            max_turns=narrow("max_turns", tier.max_turns, options.max_turns, tier.name),
            max_cost_usd=narrow(
                "max_cost_usd", least(tier.max_cost_usd, pool_budget.max_cost_usd), options.max_cost_usd, tier.name
            ),
            deadline_s=narrow(
                "deadline_s", least(tier.deadline_s, pool_budget.deadline_s), options.deadline_s, tier.name
            ),
            max_tokens=narrow("max_tokens", pool_budget.max_tokens, options.max_tokens, tier.name),
        )
        plan.query = render_query(plan.chat_messages())
        return plan

    def check_roles(self, tier: Tier, policy: Policy, *, status: int, who: str) -> None:
        """ApiError naming the first role of ``tier`` that no model allowed by ``policy`` can take."""
        view = self.views[tier.name].restrict(policy)
        for role in tier.roles:
            if not view.candidates(role):
                raise ApiError(
                    status,
                    f"no model allowed by {who} can take role '{role}', which tier '{tier.name}' needs "
                    f"(policy: {policy.describe() or 'none'}; pool '{self.pool.name}')",
                    type="permission_error" if status == 403 else "invalid_request_error",
                    param="podium" if status == 400 else "model",
                    code="no_model_for_role",
                )

    def _plan_model(self, plan: Plan, options: PodiumOptions) -> Plan:
        spec = self._spec(plan.model)
        if not plan.key.policy.allows(spec):  # 404 like an unknown model: a key must not learn what it may not see
            raise model_not_found(plan.model)
        if not plan.policy.allows(spec):
            raise bad_request(
                f"model '{spec.name}' is excluded by the request's podium policy", param="podium", code="model_excluded"
            )
        if options.max_turns is not None or options.max_cost_usd is not None:
            raise bad_request(
                "podium.max_turns and podium.max_cost_usd apply to tiers, not to a pass-through model", param="podium"
            )
        limit = plan.request.completion_limit
        if limit is not None and limit >= spec.context_window:
            raise bad_request(
                f"max_tokens {limit} does not fit model '{spec.name}' (context window {spec.context_window})",
                param="max_tokens",
                code="max_tokens_too_large",
            )
        if not any(m.text().strip() for m in plan.request.messages):
            raise bad_request("every message is empty", param="messages", code="empty_messages")
        prompt = estimate_prompt_tokens(plan.chat_messages())
        if prompt + (limit or 1) > spec.context_window:
            raise bad_request(
                f"the messages (about {prompt} tokens) and max_tokens {limit or 1} do not fit model "
                f"'{spec.name}' (context window {spec.context_window})",
                param="messages",
                code="context_length_exceeded",
            )
        plan.spec = spec
        allowed = [n for n in spec.fallbacks if n != spec.name and plan.policy.allows(self._spec(n))]
        plan.chain = [spec.name, *allowed]
        check_deployments_free(self._chain_specs(plan), self.backends)
        return plan

    def _chain_specs(self, plan: Plan) -> list[ModelSpec]:
        """The pass-through's models as the plan's policy may use them (only allowed deployments)."""
        return [self._spec(name).under(plan.policy) or self._spec(name) for name in plan.chain]

    def _spec(self, name: str) -> ModelSpec:
        spec = self.pool.config_model(name)
        assert spec is not None  # the plan's names are the pool's (its fallbacks are checked on load)
        return spec

    # running

    def iter(
        self, plan: Plan, *, stream: bool = False, on_cancel: Callable[[RunResult], None] | None = None
    ) -> PlanRun:
        """The plan's run as an async iterator of engine events (:meth:`podium.engine.Engine.iter`):
        a tier's turns, or a pass-through's one worker turn. Stopped midway (the client went away),
        ``on_cancel`` gets the run so far, reason ``interrupted``. ApiError (4xx) if it cannot start."""
        stream = stream and not plan.request.tools  # tool calls come back whole, after the model finished
        if plan.tier is None:
            upstream = Upstream()
            return PlanRun(lambda feed: self._pass_through(plan, feed, stream, on_cancel, upstream), upstream)
        assert plan.budget is not None

        def handle(event: Event) -> None:
            if isinstance(event, RunFinished):
                event.result.run_id = plan.trace_id
                if event.result.reason == "interrupted" and on_cancel:
                    on_cancel(event.result)

        engine = (
            self.engines[plan.tier.name] if plan.cost_weight is None else self.knob_engine(plan.tier, plan.cost_weight)
        )
        try:
            tier_run = engine.iter(
                plan.query,
                budget=plan.budget,
                policy=plan.policy,
                on_event=handle,
                stream=stream,
                worker_fields=worker_fields(plan.request),
            )
        except PolicyError as exc:
            raise ApiError(400, str(exc), param="podium", code="no_model_for_role") from None
        except UsageError as exc:
            raise bad_request(str(exc), param="messages") from None
        return PlanRun(tier_run.runner)

    async def run(self, plan: Plan) -> Outcome:
        """Run the plan to the end: a tier's orchestration (:meth:`iter`), or the pass-through, awaited
        as it is (its events would go to nobody: :meth:`_pass_through` is for runs that are iterated)."""
        try:
            if plan.tier is None:
                return await self.pass_through(plan)
            run = self.iter(plan)
            await run.to_end()
        except UsageError as exc:  # a config problem found mid-run
            raise bad_request(str(exc), param="messages") from None
        assert run.outcome is not None
        return run.outcome

    async def _pass_through(
        self,
        plan: Plan,
        feed: Feed,
        stream: bool,
        on_cancel: Callable[[RunResult], None] | None,
        upstream: Upstream,
    ) -> RunResult:
        """The pass-through as engine events: one worker turn (its text streamed live), then the run."""

        def cancelled(result: RunResult) -> None:
            if on_cancel is not None:
                on_cancel(result)
            feed(RunFinished(result))

        feed(TurnStarted(1, Role.WORKER, plan.chain[0], "pass-through", final=True))
        sink = (lambda spec, text: feed(TurnDelta(1, Role.WORKER, spec.name, text))) if stream else None
        outcome = await self.pass_through(plan, sink, cancelled)
        feed(TurnFinished(outcome.result.turns[0]))
        feed(RunFinished(outcome.result))
        upstream.finish, upstream.tool_calls = outcome.finish_reason, outcome.tool_calls
        return outcome.result

    def knob_engine(self, tier: Tier, cost_weight: float) -> Engine:
        """The tier's engine with its learned coordinator at ``cost_weight`` (one head serves every weight)."""
        key = (tier.name, round(cost_weight, 3))
        knobs: dict[tuple[str, float], Engine] = self.__dict__.setdefault("_knob_engines", {})
        if key not in knobs:
            coordinator = with_cost_weight(self.engines[tier.name].coordinator, key[1])
            if coordinator is None:
                raise bad_request(
                    f"tier '{tier.name}' has no cost knob: podium.cost_weight needs a learned coordinator",
                    param="podium",
                    code="no_cost_knob",
                )
            if len(knobs) >= 256:  # bounded: a client cannot grow it without limit
                knobs.pop(next(iter(knobs)))
            knobs[key] = Engine(self.views[tier.name], coordinator, backends=self.backends, breakers=self.breakers)
        return knobs[key]

    def completion_request(self, plan: Plan, spec: ModelSpec) -> CompletionRequest:
        """The call to ``spec``: a fallback whose context window cannot take the prompt is skipped."""
        r = plan.request
        messages = [c for m, c in zip(r.messages, plan.chat_messages()) if m.text().strip() or m.role == "assistant"]
        room = spec.context_window - estimate_prompt_tokens(messages)
        if room < 1:
            raise ContextOverflow(
                f"the prompt does not fit the context window of {spec.name} ({spec.context_window} tokens)"
            )
        limit = min(r.completion_limit or spec.max_tokens, room)
        stop = [r.stop] if isinstance(r.stop, str) else r.stop
        return CompletionRequest(
            messages=messages, max_tokens=limit, temperature=r.temperature, stop=stop, passthrough=upstream_fields(r)
        )

    async def pass_through(
        self, plan: Plan, sink: TextSink | None = None, on_cancel: Callable[[RunResult], None] | None = None
    ) -> Outcome:
        """Pass the chat through to the plan's model, then its allowed fallbacks, with the engine's
        reliability: retries, per-endpoint circuit breakers, total timeouts, and (streaming, via
        ``sink``) a broken stream spliced onto its retry so the client never sees text twice.
        Cancelled (the client went away): ``on_cancel`` gets the run so far, status ``interrupted``."""
        started = time.perf_counter()
        call = ModelCall(
            self.layers,
            self._chain_specs(plan),
            NO_REQUEST,  # each model's own request: completion_request
            lambda spec, _request: self.completion_request(plan, spec),
        )
        try:
            served = await call.run(sink)
        except asyncio.CancelledError:
            if on_cancel is not None:
                note = "interrupted: the client disconnected or the server is stopping"
                turn = self._failed_turn(plan, call, note)
                on_cancel(self._result(plan, [turn], None, RunStatus.FAILED, "interrupted", started))
            raise
        if served is None:
            failed = self._failed_turn(plan, call)
            reason = failed.error or "no provider available"
            return Outcome(self._result(plan, [failed], None, RunStatus.FAILED, reason, started))
        turn = answered_turn(
            1,
            Role.WORKER,
            served,
            call.context,
            reason="pass-through",
            messages=served.request.messages,
            first_choice=plan.chain[0],
        )
        finish = "length" if served.completion.finish_reason == "length" else "stop"
        finish = "tool_calls" if served.completion.tool_calls else finish
        reason = f"pass-through to {served.spec.name}"
        result = self._result(plan, [turn], served.completion.text, RunStatus.ANSWERED, reason, started)
        return Outcome(result, finish, served.completion.tool_calls)

    def _failed_turn(self, plan: Plan, call: ModelCall, note: str | None = None) -> Turn:
        """The trace record of a pass-through no model completed, with what its broken streams consumed."""
        return failed_turn(1, Role.WORKER, plan.chain[0], call.context, reason="pass-through", note=note)

    def _result(
        self, plan: Plan, turns: list[Turn], answer: str | None, status: RunStatus, reason: str, started: float
    ) -> RunResult:
        query = next((m.text() for m in reversed(plan.request.messages) if m.role == "user" and m.text().strip()), "")
        return RunResult(
            run_id=plan.trace_id,
            query=query or "(no user message)",
            answer=answer,
            status=status,
            reason=reason,
            pool=self.pool.name,
            coordinator="passthrough",
            policy=plan.policy.describe(),
            turns=turns,
            started_at=time.time() - (time.perf_counter() - started),
            latency_s=time.perf_counter() - started,
        )


def with_cost_weight(coordinator: Coordinator, cost_weight: float) -> Coordinator | None:
    """``coordinator`` at another cost weight (through a VerifyLast wrapper), or None if it has no knob."""
    inner = getattr(coordinator, "inner", None)
    if inner is not None:
        wrapped = with_cost_weight(inner, cost_weight)
        return None if wrapped is None else type(coordinator)(wrapped)  # type: ignore[call-arg]
    if hasattr(coordinator, "with_cost_weight"):
        return cast(Coordinator, coordinator.with_cost_weight(cost_weight))
    return None

"""The prompted conductor: the pool's coordinator model writes the workflow (Conductor, arXiv 2512.04388).

It is shown the task and one card per allowed model (name, roles, tags, price, context window,
region; plus ``self`` while nesting is allowed) and replies with a workflow as JSON, asked for
with the backend's structured output where it has one (``response_format`` json_schema for
OpenAI-compatible endpoints, a grammar for the embedded llama.cpp model). The reply is validated
(structure, then models, roles, policy and the step budget); an invalid one gets one repair round
with the validation error; if that fails too, or the call fails, a default topology runs and the
trace's plan origin says why. The call goes through the same retries and circuit breakers as a
step, and its tokens count against the run's budget (reported apart as orchestration tokens).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import PolicyError
from ..pool import ModelSpec, Pool
from ..reliability import CallContext, ModelCall
from ..roles import TURN_ROLES
from ..types import ChatMessage, CompletionRequest
from . import templates
from .planners import Planner
from .types import MAX_STEPS, SELF, Workflow, WorkflowError, check_against_pool, parse_workflow

if TYPE_CHECKING:
    from .runner import WorkflowRun

PROMPT = """You are the conductor of a team of language models. Design the workflow that solves the task below best: \
which models run, in which order, who sees whose output, and a focused instruction written for each model.

Models you may use:
{cards}

Reply with one JSON object and nothing else:
{{"reason": "why this design, in one sentence",
 "steps": [{{"id": "s1", "model": "MODEL", "role": "worker", "instruction": "what this model must do", "access": ["query"]}},
           {{"id": "s2", "model": "MODEL", "role": "worker", "instruction": "...", "access": ["query", "s1"]}}],
 "final": "s2"}}

Rules:
- at most {max_steps} steps; ids are short words; "model" is one of the names above;
- "role": thinker (plans, does not answer), worker (answers) or verifier (checks an answer: ACCEPT or REVISE);
- "access" lists what the step sees: "query" (the task) and ids of EARLIER steps whose outputs it reads; it sees nothing else;
- steps that do not read each other run in parallel;
- the final step writes the answer (a verifier as final step checks the worker step it reads);
- play to each model's strengths; split the task when different parts need different models.

Task:
{task}"""

REPAIR = "That workflow is invalid: {error}\nReply with the corrected JSON object only."


def model_cards(pool: Pool, allow_self: bool, depth: int, max_depth: int) -> str:
    """One line per allowed model (and ``self`` while nesting is allowed)."""
    lines = []
    for m in pool.models.values():
        roles = [r for r in m.roles if r != "coordinator"]
        if not roles:
            continue
        tags = ", ".join(m.tags) or "general"
        lines.append(
            f"- {m.name}: roles {'/'.join(roles)}; strengths: {tags}; ${m.input_usd_per_mtok:g}/${m.output_usd_per_mtok:g} "
            f"per million input/output tokens; context {m.context_window} tokens; region {m.region}"
        )
    if allow_self:
        lines.append(
            f"- {SELF}: a nested conductor that designs and runs its own workflow for the step's instruction "
            f"(a hard sub-task); nesting level {depth + 1} of at most {max_depth}"
        )
    return "\n".join(lines)


def workflow_schema(models: list[str], max_steps: int) -> dict[str, Any]:
    """JSON schema of a workflow, for backends with structured output."""
    step = {
        "type": "object",
        "additionalProperties": False,
        "required": ["id", "model", "role", "instruction", "access"],
        "properties": {
            "id": {"type": "string"},
            "model": {"type": "string", "enum": models},
            "role": {"type": "string", "enum": list(TURN_ROLES)},
            "instruction": {"type": "string"},
            "access": {"type": "array", "items": {"type": "string"}},
        },
    }
    schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["reason", "steps", "final"],
        "properties": {
            "reason": {"type": "string"},
            "steps": {"type": "array", "minItems": 1, "maxItems": max_steps, "items": step},
            "final": {"type": "string"},
        },
    }
    return {"type": "json_schema", "json_schema": {"name": "workflow", "schema": schema}}


class ConductorPlanner(Planner):
    """Asks the coordinator model (``model``, else the pool's default coordinator) for the workflow."""

    def __init__(self, model: str | None = None, *, fallback: str = "chain", **options: int) -> None:
        super().__init__(**options)
        self.model = model
        self.fallback = fallback
        self.name = f"conductor:{model}" if model else "conductor"

    def precheck(self, pool: Pool) -> None:
        templates.build(self.fallback, pool)  # the default topology must be able to run

    async def plan(self, run: WorkflowRun, task: str, depth: int) -> tuple[Workflow, str]:
        try:
            spec = run.pool.get(self.model) if self.model else run.pool.get(run.pool.default_for("coordinator"))
        except PolicyError as exc:
            return self.default(run, f"no conductor model: {exc}")
        allow_self = depth < self.max_depth
        max_steps = min(MAX_STEPS, run.steps_left)
        names = [n for n, m in run.pool.models.items() if set(m.roles) - {"coordinator"}] + (
            [SELF] if allow_self else []
        )
        messages = [
            ChatMessage(
                role="user",
                content=PROMPT.format(
                    cards=model_cards(run.pool, allow_self, depth, self.max_depth), max_steps=max_steps, task=task
                ),
            )
        ]
        first_error = None
        for attempt in (1, 2):
            reply = await self.ask(run, spec, messages, workflow_schema(names, max_steps), depth, attempt)
            if reply is None:
                return self.default(run, f"conductor call to {spec.name} failed")
            try:
                workflow = parse_workflow(reply, "conductor output")
                check_against_pool(
                    workflow,
                    run.pool,
                    allow_self=allow_self,
                    max_steps=max_steps,
                    depth=depth,
                    max_depth=self.max_depth,
                )
            except WorkflowError as exc:
                first_error = first_error or str(exc)
                messages = [
                    *messages,
                    ChatMessage(role="assistant", content=reply[:4000]),
                    ChatMessage(role="user", content=REPAIR.format(error=exc)),
                ]
                last_error = str(exc)
                continue
            repaired = f" after one repair (first error: {first_error})" if attempt == 2 else ""
            return workflow, f"conductor plan by {spec.name}{repaired}"
        return self.default(run, f"conductor output invalid after one repair ({last_error})")

    async def ask(
        self,
        run: WorkflowRun,
        spec: ModelSpec,
        messages: list[ChatMessage],
        response_format: dict[str, Any],
        depth: int,
        attempt: int,
    ) -> str | None:
        """One conductor call with retries and the breaker; structured output first, plain if the endpoint refuses it."""
        key = ("conductor", depth, attempt, len(run.orchestration))
        for fmt in (response_format, None):
            attempts = CallContext()
            async with run.semaphore:
                try:
                    served = await ModelCall(
                        run.engine.layers,
                        [spec],
                        CompletionRequest(messages=messages),
                        lambda s, _request: run.affordable(key, s, messages, temperature=0.0, response_format=fmt),
                        deadline=run.deadline,
                        context=attempts,
                    ).run()
                finally:
                    run.reserved.pop(key, None)
            if served is not None:
                run.orchestration.append(served.completion)
                return served.completion.text
            if fmt is None or not any("HTTP 400" in e or "HTTP 422" in e for e in attempts.errors):
                return None
        return None

    def default(self, run: WorkflowRun, why: str) -> tuple[Workflow, str]:
        return templates.build(self.fallback, run.pool), f"default topology {self.fallback}: {why}"

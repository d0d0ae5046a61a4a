"""The workflow format (Conductor): steps, each a model with a focused instruction and an access list.

A :class:`Workflow` is a list of :class:`Step`. ``access`` names what a step sees: ``"query"`` (the
original task) and the ids of earlier steps whose outputs it reads, nothing else. Steps whose
inputs are ready run concurrently. ``final`` (default: the last step) is the answer; when it is a
verifier step it checks the answer of the worker step it reads instead (ACCEPT, or REVISE for a
follow-up round). ``model: self`` runs a nested conductor on the step's instruction.

Structure is checked by pydantic (ids, references, cycles, size); :func:`check_against_pool` then
checks models and roles against a (policy-restricted) pool. Both raise :class:`WorkflowError`
with one line naming the step and the fix, before any model is called.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import UsageError
from ..pool import Pool
from ..roles import TurnRoleName

SELF = "self"
QUERY = "query"
MAX_STEPS = 16
MAX_INSTRUCTION = 4000
StepRole = TurnRoleName


class WorkflowError(UsageError):
    """A workflow is invalid (structure, models, roles or policy). The message names the step."""


class Step(BaseModel):
    """One model call (or, with ``model: self``, a nested conductor) in a workflow."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")
    model: str = Field(min_length=1)
    role: StepRole = "worker"
    instruction: str = Field(min_length=1, max_length=MAX_INSTRUCTION)
    access: list[str] = Field(default_factory=lambda: [QUERY])

    @property
    def deps(self) -> list[str]:
        """The step ids this step reads (its access without ``query``)."""
        return [a for a in self.access if a != QUERY]


class Workflow(BaseModel):
    """A validated plan. ``reason`` says why this topology (written by the conductor)."""

    model_config = ConfigDict(extra="forbid")
    steps: list[Step] = Field(min_length=1, max_length=MAX_STEPS)
    final: str | None = None
    reason: str = ""

    @model_validator(mode="after")
    def _check_graph(self) -> Workflow:
        ids = [s.id for s in self.steps]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate step ids {dupes}; give every step its own id")
        if QUERY in ids:
            raise ValueError(f"'{QUERY}' is reserved for the original task; rename that step")
        for s in self.steps:
            missing = [a for a in s.deps if a not in ids]
            if missing:
                raise ValueError(f"step '{s.id}' reads unknown step(s) {missing}; known steps: {ids}")
        cycle = find_cycle(self.steps)
        if cycle:
            raise ValueError(f"cycle {' -> '.join(cycle)}: a step cannot (indirectly) read its own output")
        position = {i: n for n, i in enumerate(ids)}
        for s in self.steps:
            later = [a for a in s.deps if position[a] > position[s.id]]
            if later:
                raise ValueError(f"step '{s.id}' reads {later}, listed after it; list steps in an order they can run")
        if self.final is not None and self.final not in ids:
            raise ValueError(f"final '{self.final}' is not a step; known steps: {ids}")
        return self

    @property
    def final_step(self) -> Step:
        """The step whose output is the answer (or, a verifier, that checks it)."""
        return self.by_id()[self.final] if self.final else self.steps[-1]

    def by_id(self) -> dict[str, Step]:
        return {s.id: s for s in self.steps}

    def text(self) -> str:
        """The plan as indented text, one line per step (``--show-plan``)."""
        lines = [
            f"workflow: {len(self.steps)} steps, final {self.final_step.id}"
            + (f" ({self.reason})" if self.reason else "")
        ]
        for s in self.steps:
            sees = ", ".join(s.access) or "nothing"
            lines.append(f"  {s.id:<10} {s.role:<8} {s.model:<22} sees [{sees}]: {_one_line(s.instruction, 70)}")
        return "\n".join(lines)


def find_cycle(steps: list[Step]) -> list[str] | None:
    """A dependency cycle as a list of ids (first id repeated at the end), or None."""
    deps = {s.id: s.deps for s in steps}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in deps.get(node, []):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep] if dep in path else [node, dep]
            if dep in deps and state.get(dep) is None:
                found = visit(dep, [*path, dep])
                if found:
                    return found
        state[node] = 2
        return None

    for s in steps:
        if state.get(s.id) is None:
            found = visit(s.id, [s.id])
            if found:
                return found
    return None


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def parse_workflow(data: Any, source: str = "workflow") -> Workflow:
    """A Workflow from a dict or JSON text; WorkflowError with one line naming the field otherwise."""
    if isinstance(data, str):
        data = extract_json(data)
        if data is None:
            raise WorkflowError(
                f'{source}: no complete JSON object with "steps" found (cut off at max_tokens?); '
                'reply with one JSON object {"steps": [...]}'
            )
    try:
        return Workflow.model_validate(data)
    except ValidationError as exc:
        raise WorkflowError(f"{source}: {describe_error(exc)}") from None


def describe_error(exc: ValidationError) -> str:
    """The first validation error as one line: where, and what is wrong."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    message = err["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def extract_json(text: str) -> Any:
    """The first JSON object with ``steps`` in ``text`` (tolerates prose and ``` fences around it), else None
    (an object cut off at max_tokens leaves only its inner objects, which are not a workflow)."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
            if isinstance(value, dict) and "steps" in value:
                return value
        except ValueError:
            pass
        start = text.find("{", start + 1)
    return None


def check_against_pool(
    workflow: Workflow,
    pool: Pool,
    *,
    allow_self: bool,
    max_steps: int | None = None,
    depth: int = 0,
    max_depth: int = 0,
) -> None:
    """Reject models outside the (policy-restricted) pool, roles a model may not take, ``self`` past
    ``max_depth``, and more steps than the budget allows, before any call is made."""
    if max_steps is not None and len(workflow.steps) > max_steps:
        raise WorkflowError(
            f"workflow has {len(workflow.steps)} steps but only {max_steps} fit the step budget; plan fewer steps"
        )
    for s in workflow.steps:
        if s.model == SELF:
            if not allow_self:
                raise WorkflowError(
                    f"step '{s.id}': model 'self' is not allowed at depth {depth} (max_depth {max_depth}); "
                    "name a pool model instead"
                )
            continue
        if s.model not in pool.models:
            known = sorted(pool.models)
            if s.model in {m.name for m in pool.config.models}:
                raise WorkflowError(
                    f"step '{s.id}': model '{s.model}' is not allowed by the policy "
                    f"({pool.policy.describe()}); allowed models: {known}"
                )
            raise WorkflowError(f"step '{s.id}': unknown model '{s.model}'; pool '{pool.name}' has {known}")
        if s.role not in pool.models[s.model].roles:
            raise WorkflowError(
                f"step '{s.id}': model '{s.model}' may not take role '{s.role}' "
                f"(its roles: {pool.models[s.model].roles})"
            )

"""Planners: what writes the workflow a run executes. Chosen by coordinator name:

- ``conductor`` / ``conductor:MODEL``: the prompted conductor (:mod:`podium.workflows.conductor`).
- ``topology:chain|moa|best-of-n|debate``: a fixed template (:mod:`podium.workflows.templates`).
- ``workflow:PATH``: a workflow written by hand (JSON or YAML), validated against the pool
  before any call.

Every planner has ``max_depth`` (nesting of ``self`` steps), ``max_parallel`` (concurrent model
calls) and ``rounds`` (follow-up rounds after a final verifier's REVISE).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from ..errors import ConfigError
from ..pool import Pool
from . import templates
from .types import Workflow, WorkflowError, check_against_pool, parse_workflow

if TYPE_CHECKING:
    from ..coordinators.base import RunState
    from ..types import Decision
    from .runner import WorkflowRun

DEFAULT_MAX_DEPTH = 2
DEFAULT_MAX_PARALLEL = 4
DEFAULT_ROUNDS = 2


class Planner:
    """Base of the workflow planners; the engine hands a run to the workflow runner when it sees one."""

    plans_workflows = True
    name = "workflow"

    def __init__(
        self,
        *,
        max_depth: int = DEFAULT_MAX_DEPTH,
        max_parallel: int = DEFAULT_MAX_PARALLEL,
        rounds: int = DEFAULT_ROUNDS,
    ) -> None:
        self.max_depth = max_depth
        self.max_parallel = max_parallel
        self.rounds = rounds

    def precheck(self, pool: Pool) -> None:
        """Raise UsageError, before any call, if this planner can never run on ``pool``."""

    async def plan(self, run: WorkflowRun, task: str, depth: int) -> tuple[Workflow, str]:
        """The workflow for ``task`` at ``depth`` and where it came from (recorded in the trace)."""
        raise NotImplementedError

    async def decide(self, state: RunState) -> Decision:
        """Never called: the engine hands a planner's runs to the workflow runner (``plans_workflows``).
        Present so that a planner is a :class:`~podium.coordinators.base.Coordinator`."""
        raise NotImplementedError(f"{self.name} plans workflows; it does not decide single turns")


class TopologyPlanner(Planner):
    """A fixed topology; ``n`` proposers or samples (moa, best-of-n), ``debate_rounds`` (debate)."""

    def __init__(self, kind: str, *, n: int = 3, debate_rounds: int = 2, **options: int) -> None:
        super().__init__(**options)
        if kind not in templates.BUILDERS:
            templates.build(kind, None)  # type: ignore[arg-type]  # raises the UsageError listing the topologies
        self.kind, self.n, self.debate_rounds = kind, n, debate_rounds
        self.name = f"topology:{kind}"

    def precheck(self, pool: Pool) -> None:
        self.build(pool)

    def build(self, pool: Pool) -> Workflow:
        return templates.build(self.kind, pool, n=self.n, rounds=self.debate_rounds)

    async def plan(self, run: WorkflowRun, task: str, depth: int) -> tuple[Workflow, str]:
        return self.build(run.pool), f"topology {self.kind}"


class StaticPlanner(Planner):
    """A given workflow (``workflow:PATH``); rejected before any call if the pool or policy cannot run it."""

    def __init__(self, workflow: Workflow, source: str = "workflow", **options: int) -> None:
        super().__init__(**options)
        self.workflow = workflow
        self.source = source
        self.name = f"workflow:{source}"

    @classmethod
    def load(cls, path: str, **options: int) -> StaticPlanner:
        """Read a workflow file (JSON or YAML)."""
        file = Path(path).expanduser()
        if not file.is_file():
            raise ConfigError(
                f"{path}: workflow file not found; pass a JSON or YAML file to --coordinator workflow:PATH"
            )
        try:
            data = yaml.safe_load(file.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid JSON or YAML ({str(exc).splitlines()[0]})") from None
        return cls(parse_workflow(data, str(path)), str(path), **options)

    def precheck(self, pool: Pool) -> None:
        try:
            check_against_pool(self.workflow, pool, allow_self=self.max_depth > 0, depth=0, max_depth=self.max_depth)
        except WorkflowError as exc:
            raise WorkflowError(f"{self.source}: {exc}") from None

    async def plan(self, run: WorkflowRun, task: str, depth: int) -> tuple[Workflow, str]:
        if depth > 0:  # a nested 'self' step of a hand-written workflow is planned by the conductor
            from .conductor import ConductorPlanner

            return await ConductorPlanner(max_depth=self.max_depth).plan(run, task, depth)
        return self.workflow, f"workflow {self.source}"

"""Conductor workflows: a plan of steps (which model, which role, what instruction, seeing what),
run as a parallel graph, written by a conductor model or taken from a fixed topology.

See docs/conductor.md. Chosen like any coordinator: ``conductor``, ``topology:NAME``,
``workflow:PATH`` (``Engine(pool, "conductor")``, ``podium ask --coordinator conductor``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict, Unpack

from .types import Step, Workflow, WorkflowError, check_against_pool, parse_workflow

if TYPE_CHECKING:
    from .planners import Planner

__all__ = ["PlannerOptions", "Step", "Workflow", "WorkflowError", "check_against_pool", "get_planner", "parse_workflow"]


class PlannerOptions(TypedDict, total=False):
    """The options every planner takes (see :class:`~podium.workflows.planners.Planner`)."""

    max_depth: int
    max_parallel: int
    rounds: int


def get_planner(name: str, arg: str, **options: Unpack[PlannerOptions]) -> Planner:
    """The planner for a coordinator name ``conductor``, ``topology`` or ``workflow`` and its argument."""
    if name == "conductor":
        from .conductor import ConductorPlanner

        return ConductorPlanner(model=arg or None, **options)
    from .planners import StaticPlanner, TopologyPlanner

    if name == "topology":
        return TopologyPlanner(arg or "chain", **options)
    return StaticPlanner.load(arg, **options)

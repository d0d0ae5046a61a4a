"""Conductor workflows: a plan of steps (which model, which role, what instruction, seeing what),
run as a parallel graph, written by a conductor model or taken from a fixed topology.

See docs/conductor.md. Chosen like any coordinator: ``conductor``, ``topology:NAME``,
``workflow:PATH`` (``Engine(pool, "conductor")``, ``podium ask --coordinator conductor``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict, Unpack

from ..errors import UsageError
from .types import Step, Workflow, WorkflowError, check_against_pool, parse_workflow

if TYPE_CHECKING:
    from .planners import Planner, TopologyPlanner

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
    from .planners import StaticPlanner

    if name == "topology":
        return topology_planner(arg, options)
    return StaticPlanner.load(arg, **options)


def topology_planner(arg: str, options: PlannerOptions) -> TopologyPlanner:
    """``topology:NAME[:N]``: N samples (best-of-n), proposers (moa) or rounds (debate)."""
    from .planners import TopologyPlanner

    kind, _, count = (arg or "chain").partition(":")
    if not count:
        return TopologyPlanner(kind, **options)
    if not count.isdigit() or int(count) < 1 or kind not in ("best-of-n", "moa", "debate"):
        raise UsageError(
            f"bad coordinator 'topology:{arg}': N in topology:best-of-n|moa|debate:N is a whole number >= 1 "
            "(samples, proposers or debate rounds); chain takes none"
        )
    if kind == "debate":
        planner = TopologyPlanner(kind, debate_rounds=int(count), **options)
    else:
        planner = TopologyPlanner(kind, n=int(count), **options)
    planner.name = f"topology:{arg}"
    return planner

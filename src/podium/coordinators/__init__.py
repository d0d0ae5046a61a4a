"""Coordinators decide who acts next. Chosen by name:

- ``rules``: thinker, worker, verifier; back to the worker after REVISE.
- ``prompted``: the pool's coordinator model names the next role (validated, with a fallback).
- ``fixed`` / ``fixed:MODEL``: one model answers once, the single-model baseline.
- ``learned:PATH``: a trained TRINITY head (``pip install 'podium[train]'`` to train one).
- ``conductor[:MODEL]``, ``topology:chain|moa|best-of-n|debate``, ``workflow:PATH``: workflow planners
  (:mod:`podium.workflows`); the engine runs their plans as parallel graphs.
"""

from __future__ import annotations

from ..errors import UsageError
from .base import Coordinator, RunState

__all__ = ["COORDINATORS", "Coordinator", "RunState", "get_coordinator"]

COORDINATORS = (
    "rules",
    "prompted",
    "fixed[:MODEL]",
    "learned:PATH[@COST_WEIGHT]",
    "conductor[:MODEL]",
    "topology:chain|moa|best-of-n|debate",
    "workflow:PATH",
)


def split_cost_weight(name: str) -> tuple[str, float]:
    """``"NAME@0.3"`` -> ``("NAME", 0.3)`` (RouteLLM-style threshold in the name); no ``@``: weight 0."""
    base, sep, tail = name.rpartition("@")
    if not sep:
        return name, 0.0
    try:
        weight = float(tail)
    except ValueError:
        return name, 0.0  # an @ that is part of a path
    from ..learned.knob import check_cost_weight

    return base, check_cost_weight(weight)


def get_coordinator(spec: str) -> Coordinator:
    """Build a coordinator from its name (``rules``, ``prompted``, ``fixed:MODEL``, ``learned:PATH[@W]``;
    ``W``: the cost weight in [0, 1], see :mod:`podium.learned.knob`)."""
    name, _, arg = spec.partition(":")
    if name == "rules":
        from .rules import RulesCoordinator

        return RulesCoordinator()
    if name == "prompted":
        from .prompted import PromptedCoordinator

        return PromptedCoordinator(model=arg or None)
    if name == "fixed":
        from .fixed import FixedCoordinator

        return FixedCoordinator(model=arg or None)
    if name == "learned":
        if not arg:
            raise UsageError("the learned coordinator needs a head file: --coordinator learned:PATH")
        from .learned import LearnedCoordinator

        path, weight = split_cost_weight(arg)
        return LearnedCoordinator.load(path, weight)
    if name in ("conductor", "topology", "workflow"):
        if name == "workflow" and not arg:
            raise UsageError("the workflow coordinator needs a file: --coordinator workflow:PATH")
        from ..workflows import get_planner

        return get_planner(name, arg)
    from ..suggest import did_you_mean

    hint = did_you_mean(name, ("rules", "prompted", "fixed", "learned", "conductor", "topology", "workflow"))
    raise UsageError(f"unknown coordinator '{spec}'{hint}; choose one of: {', '.join(COORDINATORS)}")

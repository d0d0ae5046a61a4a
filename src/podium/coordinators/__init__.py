"""Coordinators decide who acts next. Chosen by name:

- ``rules``: thinker, worker, verifier; back to the worker after REVISE.
- ``prompted``: the pool's coordinator model names the next role (validated, with a fallback).
- ``fixed`` / ``fixed:MODEL``: one model answers once, the single-model baseline.
- ``learned:PATH``: a trained TRINITY head (``pip install 'podium[train]'`` to train one).
- ``tiers:PATH[@W]``: complexity tiers on such a head, a cheap and a strong model per role
  (:mod:`podium.coordinators.tiers`).
- ``conductor[:MODEL]``, ``topology:chain|moa|best-of-n|debate``, ``workflow:PATH``: workflow planners
  (:mod:`podium.workflows`); the engine runs their plans as parallel graphs.

Every name is a :class:`CoordinatorType` in :data:`COORDINATOR_TYPES`; an installed package adds one
through the ``podium.coordinators`` entry point group (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import UsageError
from ..registry import Registry
from .base import Coordinator, RunState

__all__ = [
    "COORDINATORS",
    "COORDINATOR_TYPES",
    "Coordinator",
    "CoordinatorType",
    "RunState",
    "coordinator_usages",
    "get_coordinator",
]

ENTRY_POINT_GROUP = "podium.coordinators"


@dataclass(frozen=True)
class CoordinatorType:
    """A coordinator chosen by ``name`` (``--coordinator NAME[:ARG]``).

    ``factory(arg)`` builds it from the text after the first ``:`` ('' when there is none) and raises
    :class:`podium.errors.UsageError` (one line, with the fix) for a bad argument. ``usage`` is how
    the name is written in help and errors, e.g. ``fixed[:MODEL]``.
    """

    name: str
    factory: Callable[[str], Coordinator]
    usage: str = ""
    description: str = ""


def _rules(arg: str) -> Coordinator:
    from .rules import RulesCoordinator

    return RulesCoordinator()


def _prompted(arg: str) -> Coordinator:
    from .prompted import PromptedCoordinator

    return PromptedCoordinator(model=arg or None)


def _fixed(arg: str) -> Coordinator:
    from .fixed import FixedCoordinator

    return FixedCoordinator(model=arg or None)


def _learned(arg: str) -> Coordinator:
    if not arg:
        raise UsageError("the learned coordinator needs a head file: --coordinator learned:PATH")
    from .learned import LearnedCoordinator

    path, weight = split_cost_weight(arg)
    return LearnedCoordinator.load(path, weight)


def _tiers(arg: str) -> Coordinator:
    if not arg:
        raise UsageError("the tiers coordinator needs a head file: --coordinator tiers:PATH[@COST_WEIGHT]")
    from .tiers import TiersCoordinator

    path, weight = split_cost_weight(arg)
    return TiersCoordinator.load(path, weight)


def _planner(name: str) -> Callable[[str], Coordinator]:
    def build(arg: str) -> Coordinator:
        if name == "workflow" and not arg:
            raise UsageError("the workflow coordinator needs a file: --coordinator workflow:PATH")
        from ..workflows import get_planner

        planner: Coordinator = get_planner(name, arg)
        return planner

    return build


_BUILTINS = (
    CoordinatorType("rules", _rules, "rules", "thinker, worker, verifier; back to the worker after REVISE"),
    CoordinatorType("prompted", _prompted, "prompted", "the pool's coordinator model names the next role"),
    CoordinatorType("fixed", _fixed, "fixed[:MODEL]", "one model answers once (the single-model baseline)"),
    CoordinatorType("learned", _learned, "learned:PATH[@COST_WEIGHT]", "a trained TRINITY head"),
    CoordinatorType("conductor", _planner("conductor"), "conductor[:MODEL]", "a model writes the workflow"),
    CoordinatorType("topology", _planner("topology"), "topology:chain|moa|best-of-n|debate[:N]", "a fixed topology"),
    CoordinatorType("workflow", _planner("workflow"), "workflow:PATH", "a workflow file"),
    CoordinatorType(
        "tiers",
        _tiers,
        "tiers:PATH[@COST_WEIGHT]",
        "complexity tiers: a cheap and a strong model per role, switched on the head's predicted difficulty",
    ),
)


def _register_builtins(registry: Registry[CoordinatorType]) -> None:
    for entry in _BUILTINS:
        registry.register(entry)


COORDINATOR_TYPES: Registry[CoordinatorType] = Registry(ENTRY_POINT_GROUP, CoordinatorType, _register_builtins)

COORDINATORS = tuple(c.usage for c in _BUILTINS)  # the built-ins as written in help (plugins: coordinator_usages())


def coordinator_usages() -> list[str]:
    """How every registered coordinator is written, plugins included (``fixed[:MODEL]``, ...)."""
    return [c.usage or c.name for c in COORDINATOR_TYPES.entries()]


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
    """Build a coordinator from its name (``rules``, ``prompted``, ``fixed:MODEL``, ``learned:PATH[@W]``,
    or a plugin's; ``W``: the cost weight in [0, 1], see :mod:`podium.learned.knob`)."""
    name, _, arg = spec.partition(":")
    found = COORDINATOR_TYPES.get(name)
    if found is not None:
        return found.factory(arg)
    from ..suggest import did_you_mean

    hint = did_you_mean(name, COORDINATOR_TYPES.names())
    raise UsageError(f"unknown coordinator '{spec}'{hint}; choose one of: {', '.join(coordinator_usages())}")

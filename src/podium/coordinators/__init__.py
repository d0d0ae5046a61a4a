"""Coordinators decide who acts next. Chosen by name:

- ``rules``: thinker, worker, verifier; back to the worker after REVISE.
- ``prompted``: the pool's coordinator model names the next role (validated, with a fallback).
- ``fixed`` / ``fixed:MODEL``: one model answers once, the single-model baseline.
- ``learned:PATH``: a trained TRINITY head (``pip install 'podium[train]'`` to train one).
"""

from __future__ import annotations

from podium.coordinators.base import Coordinator, RunState
from podium.errors import UsageError

__all__ = ["Coordinator", "RunState", "get_coordinator", "COORDINATORS"]

COORDINATORS = ("rules", "prompted", "fixed[:MODEL]", "learned:PATH")


def get_coordinator(spec: str) -> Coordinator:
    """Build a coordinator from its name (``rules``, ``prompted``, ``fixed:MODEL``, ``learned:PATH``)."""
    name, _, arg = spec.partition(":")
    if name == "rules":
        from podium.coordinators.rules import RulesCoordinator

        return RulesCoordinator()
    if name == "prompted":
        from podium.coordinators.prompted import PromptedCoordinator

        return PromptedCoordinator(model=arg or None)
    if name == "fixed":
        from podium.coordinators.fixed import FixedCoordinator

        return FixedCoordinator(model=arg or None)
    if name == "learned":
        if not arg:
            raise UsageError("the learned coordinator needs a head file: --coordinator learned:PATH")
        from podium.coordinators.learned import LearnedCoordinator

        return LearnedCoordinator.load(arg)
    from podium.suggest import did_you_mean

    hint = did_you_mean(name, ("rules", "prompted", "fixed", "learned"))
    raise UsageError(f"unknown coordinator '{spec}'{hint}; choose one of: {', '.join(COORDINATORS)}")
